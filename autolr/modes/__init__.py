"""What one `autolr run` does, by prune.mode: `finetune.py` (a fixed depth), `depth_search.py`
(Algorithm 1 chooses the depth, then `finetune`) and `iterative.py` (SILO's pruning cycles). Each
composes the training loop (`autolr.train.loop`) through its public functions; none imports another."""
