"""The hooks the front door depends on (service/doors/front_door.py). These fail when a BentoML
or Starlette upgrade changes them, before any user sees a difference: the Starlette app BentoML
builds has a `middleware_stack` that the lifespan hook replaces, requests then reach the front
door before BentoML's layers, and the BentoML middlewares it borrows when configured still
exist with the arguments it passes."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import asyncio, json, sys
import service.app
from starlette.applications import Starlette
from service.doors.front_door import FrontDoor

app = service.app.VAEService.to_asgi(is_main=True)
assert isinstance(app, Starlette), type(app)


async def main():
    started = asyncio.Event()

    async def receive():
        if not started.is_set():
            return {"type": "lifespan.startup"}
        await asyncio.Event().wait()

    async def send(message):
        started.set()
    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, receive, send))
    await started.wait()
    door = app.middleware_stack
    assert getattr(door, "is_front_door", False), type(door)
    inner = door
    while not isinstance(inner, FrontDoor):
        inner = inner.app
    # behind the door: BentoML's whole stack, its error layer first
    assert type(inner.app).__name__ == "ServerErrorMiddleware", type(inner.app)
    body = json.dumps({"inputs": [[0.5] * 64]}).encode()
    answer = {}

    async def req_receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def req_send(message):
        if message["type"] == "http.response.start":
            answer.update(status=message["status"], headers=dict(message["headers"]))
    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
               "method": "POST", "scheme": "http", "path": "/encode", "raw_path": b"/encode",
               "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
               "server": ("127.0.0.1", 3000), "state": {},
               "headers": [(b"content-type", b"application/json")]}, req_receive, req_send)
    assert answer["status"] == 200 and b"x-request-id" in answer["headers"], answer
    life.cancel()
    print("front door in place:", " > ".join(type(a).__name__ for a in _chain(door)))


def _chain(app):
    while app is not None and not type(app).__name__ == "ServerErrorMiddleware":
        yield app
        app = getattr(app, "app", None)


asyncio.run(main())
"""


def _run(trained, env: dict[str, str]) -> str:
    import os

    full = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "VAE_GRPC": "false",
            "VAE_MODEL_REPOSITORY": str(trained["repository"]), "VAE_MODEL_NAME": "digits",
            **env}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=full,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def test_front_door_stands_in_front_of_bentoml(trained):
    assert "front door in place: FrontDoor" in _run(trained, {})


def test_every_wrapper_in_place_when_configured(trained):
    """CORS, BentoML's access log and traffic metrics, and tracing wrap the same door."""
    out = _run(trained, {"VAE_CORS_ORIGINS": "http://a.example", "VAE_ACCESS_LOG": "bentoml",
                         "VAE_BENTOML_METRICS": "true", "VAE_TRACING_SAMPLE_RATE": "1",
                         "VAE_TRACING_EXPORTER": "in_memory"})
    assert "OpenTelemetryMiddleware > RunnerTrafficMetricsMiddleware > AccessLogMiddleware > " \
        "CORSMiddleware > FrontDoor" in out, out
