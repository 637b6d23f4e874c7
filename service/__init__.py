"""Serving: BentoML + onnxruntime (never torch). The service class lives in service.app."""
