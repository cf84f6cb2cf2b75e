"""Grids of runs, above `autolr.run`: `sweep.py` (`autolr sweep`: choose settings on the validation
split) and `study.py` (`autolr study`: arms x seeds on the test split, with paired intervals)."""
