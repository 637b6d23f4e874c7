"""Export: a training checkpoint becomes two verified ONNX graphs and a manifest."""
