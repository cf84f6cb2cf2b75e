"""Scoring helpers that do not need the training loop: `stats.py` (means, Student-t intervals, paired
differences over seeds, for `autolr study`). (With issue 14's move, the metrics and saved-model scoring join.)"""
