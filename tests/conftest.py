import os

# Tests never touch the network; set before transformers/datasets/evaluate are imported (they read it at import).
for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(name, "1")
