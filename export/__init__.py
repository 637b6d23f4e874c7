"""Export: a training checkpoint becomes two verified ONNX graphs and a manifest."""

import os

# onnxruntime (>= 1.29 on Linux) records a device ID and uploads usage telemetry unless this is
# set before its first session; the project never phones home (tests/test_no_telemetry.py)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def __getattr__(name: str):  # noqa: ANN202 - `from export import export_vae`, imported lazily
    if name == "export_vae":
        from export.byo import export_vae

        return export_vae
    raise AttributeError(name)
