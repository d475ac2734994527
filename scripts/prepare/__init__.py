"""Stage 2, prepare: a cohort brought to one reference pose. In: a datalist of raw scans. Out: the same scans
rigidly registered to a reference (``registration``), resampled, a new datalist, and registration.csv with the
pose and checks of every subject (``cohort``: the command run by configs/prepare.yaml)."""
