"""The model repository contract shared by export and service (no torch, no onnxruntime)."""
