"""The page door: the latent explorer at /ui, static HTML/CSS/JS from service/doors/ui/, no
build step, no CDN.

The page calls only the public JSON endpoints (so it doubles as an example of the API). Its
Content-Security-Policy allows nothing but this origin: no third-party script, style or
connection can run even if a file were edited to ask for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.staticfiles import StaticFiles

UI_DIR = Path(__file__).parent / "ui"
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class _Headers:
    """Security and caching headers on every /ui response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-cache"),  # revalidate: the page follows upgrades
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def make_ui_app() -> Any:
    return _Headers(StaticFiles(directory=UI_DIR, html=True))
