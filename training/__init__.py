"""Training: the classic VAE in PyTorch (model.py), offline data (data.py), the CLI (train.py)."""
