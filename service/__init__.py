"""Serving: BentoML + onnxruntime (never torch). The service class lives in service.app."""

import os

# onnxruntime (>= 1.29 on Linux) records a device ID and uploads usage telemetry unless this is
# set before its first session; the project never phones home (tests/test_no_telemetry.py)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
