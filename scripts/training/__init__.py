"""Stage 3, training: what only training uses. In: prepared cases and their labels. Out: weights with their model
card. Modules: ``transforms`` (the label-swapping flip), ``tissue_contrast`` (phantoms re-rendered with random
contrasts), ``losses`` (partial-label loss), ``sampling`` (the real-scan share of steps), ``checkpoints`` (atomic
saves and resume), ``handlers`` (per-muscle Dice logs, epoch progress bar), ``average_weights``."""
