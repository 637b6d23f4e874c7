"""The container HEALTHCHECK: exit 0 when this replica's /readyz answers 200, else 1.

Standard library only (it runs every few seconds inside the image). It asks the address the
server was told to bind, through the same environment variables `bentoml serve` reads
(BENTOML_HOST, BENTOML_PORT); a wildcard host is asked on loopback.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping


def readyz_url(env: Mapping[str, str] = os.environ) -> str:
    host = env.get("BENTOML_HOST") or "0.0.0.0"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{env.get('BENTOML_PORT') or '3000'}/readyz"


def main() -> int:
    url = readyz_url()
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return 0 if r.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
