"""BentoML's documented API path, measured: the service's own /encode operation (the same
request model, runtime and batcher) behind a plain `@bentoml.api` endpoint, with the same
settings as the service (tracing, BentoML's metrics and its access log off). What the front
door (service/doors/front_door.py) is measured against in docs/BENCHMARKS.md.

    VAE_MODEL_REPOSITORY=models bentoml serve benchmarks.peers.documented_path:Documented
"""

from __future__ import annotations

from typing import Any

import bentoml

from service.config import bentoml_config, load_settings
from service.operations.api import Operations
from service.operations.requests import Encode
from service.runtime.engine import ModelSet

SETTINGS = load_settings()


@bentoml.service(**{**bentoml_config(SETTINGS), "name": "documented"})
class Documented:
    def __init__(self) -> None:
        self.ops = Operations(ModelSet.load(SETTINGS), SETTINGS)

    @bentoml.api(route="/encode", input_spec=Encode)
    async def encode(self, **fields: Any) -> dict:
        res = await self.ops.encode(Encode(**fields))
        return {k: v.tolist() for k, v in res.items()}

