"""Stage 4, inference: from a checked case to a segmentation on its own grid. In: cases from ``scripts.data`` and
weights. Out: per case the label image (uint8, the input's shape and affine) and the class probabilities that the
report reads. Modules: ``flip_tta`` (mean of the scan and its mirror), ``input_grid`` (probabilities back to the
input grid, label chosen there, largest piece per muscle), ``outputs`` (writing the segmentation),
``background_outputs`` (a case's files written while the next is segmented), ``cohort_run`` (a failed case
reported and skipped, the others go on)."""
