import os

# Tests never reach the network: without this a hub lookup retries for about 50 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
