"""Scoring, below the training loop: `metrics.py` (Recall@K, MAP@R, accuracy), `saved.py` (a saved
model scored again: `autolr eval`), `embed.py` (`autolr embed`), `cam.py` (`autolr cam`) and `stats.py`
(means, Student-t intervals and paired differences for `autolr study`)."""
