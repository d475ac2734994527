"""Tools that measure the bundle rather than run it: speed (``benchmark``), generalization to scans unlike the
training data (``generalization``), calibration of the confidence flags (``confidence_calibration``), the
registration benchmark (``registration_benchmark``) and the release check (``release``). They may use any stage
and the phantoms; no stage imports them."""
