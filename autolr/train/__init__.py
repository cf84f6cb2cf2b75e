"""The training loop and what it is built from: `loop.py` (setup -> epoch -> evaluate -> save),
`autolr.py` (AutoLR: its math and Algorithm 2's trials), `schedules.py` (every LR schedule as a pure
function, SILO's cycles included), `snapshots.py`, `accel.py`, `optim.py`, `losses.py` and
`weight_pruning.py` (masks, global magnitude and movement scores)."""
