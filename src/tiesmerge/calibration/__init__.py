"""Calibration: each adapter's own unlabeled prompts (read, budgeted, checked against test leaks) and the input
statistics collected on them (RegMean's Grams, RegMean++'s block-by-block statistics). Beside train/, which distils."""
