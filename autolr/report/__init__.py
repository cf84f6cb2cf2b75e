"""What a finished run, comparison or study looks like on disk: `runs.py` (plots and summary.md of a
run folder, `autolr compare`), `retrievals.py` (query/neighbour grids) and `study.py` (a study's tables
and figure)."""
