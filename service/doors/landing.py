"""The landing page at `/`: what is served (model, version, shapes) and where to go from here
(the explorer, the API reference, the OpenAPI document, metrics). Plain HTML from this
process only, under the same Content-Security-Policy as the explorer (service/doors/page.py):
no third-party script, style, font or connection."""

from __future__ import annotations

from html import escape
from typing import Any

from service.doors.page import CSP

HEADERS = [(b"content-type", b"text/html; charset=utf-8"),
           (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff")]
# Swagger UI (BentoML's bundled copy, served from this process) sets inline style attributes;
# everything else stays as strict: scripts, fonts, images and connections from this origin only
DOCS_HEADERS = [HEADERS[0], (b"content-security-policy", CSP.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'").encode()), HEADERS[2]]

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>VAE serving: {title}</title></head>
<body>
<h1>VAE serving</h1>
<ul>{models}</ul>
<ul>
<li><a href="ui/">the latent explorer</a>: samples, interpolations, the latent map,
posteriors and their overlap</li>
<li><a href="docs">API reference</a> (Swagger UI) and the <a href="docs.json">OpenAPI
document</a>; every operation is a POST with a JSON body</li>
<li><a href="v2">KServe V2</a> (Open Inference Protocol) over REST here and over gRPC</li>
<li><a href="metrics">metrics</a> (Prometheus), <a href="readyz">readiness</a>,
<a href="livez">liveness</a></li>
</ul>
</body>
</html>
"""


_MODEL = """<li>Model <b>{name}</b>{default}, version <b>{version}</b> (loaded: {versions});
items [N, {shape}], latent size {latent}, {likelihood} likelihood;
<a href="ui/?model={name}">explore it</a>.</li>"""


def page(svc: Any) -> bytes:
    registry = svc.registry
    rows = []
    for name, ms in sorted(registry.models.items()):
        if not ms.runtimes:
            continue
        rt = ms.get(None)
        m = rt.manifest
        rows.append(_MODEL.format(
            name=escape(m.name), version=m.version, latent=m.latent_dim,
            default=" (default)" if name == registry.default_name and len(registry.models) > 1
            else "", versions=", ".join(str(v) for v in ms.versions),
            shape=", ".join(str(d) for d in rt.shape), likelihood=escape(m.likelihood)))
    default = registry.models.get(registry.default_name)
    title = f"{default.name} v{max(default.runtimes)}" if default and default.runtimes else \
        ", ".join(registry.names) or "no model yet"
    return _PAGE.format(title=escape(title),
                        models="\n".join(rows) or "<li>no model is served yet</li>").encode()
