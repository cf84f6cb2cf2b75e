"""What the training loop is built from: `optim.py` (timm's optimizers over autolr's param groups) and
`losses.py` (pytorch-metric-learning losses by name). The loop itself is still `autolr/engine.py`."""
