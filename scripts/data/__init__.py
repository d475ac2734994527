"""Stage 1, data: what a case is and how it is read. In: a datalist, an image path or a DICOM folder. Out: checked
cases (every image on one grid, labels in the bundle's map, the in-phase image where only water and fat are given),
or one error naming what is wrong. Modules: ``datalist`` (sections, one-scan entries), ``image_checks`` (the
loader that refuses unreadable, non-finite or misshapen images), ``gzip_reading``, ``geometry`` (grids and
axes), ``transforms`` (case geometry, label mapping, in-phase synthesis). Every later stage reads through here."""
