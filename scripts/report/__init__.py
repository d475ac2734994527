"""Stage 5, report: what the segmentation measures and how far to trust it. In: a case's segmentation, its Dixon
images and the network's probabilities. Out: ``<id>_metrics.json`` and slices.csv (``muscle_metrics``: volume,
area, fat fraction), per-muscle confidence and check flags (``confidence``), the QC figure (``qc_figure``), viewer
colour tables (``colour_tables``), metrics.csv for the cohort (``case_report``) and, against manual labels, the
scores of evaluation (``evaluation``)."""
