"""Optional bearer-token authentication, the same on every door: the HTTP API, V2 REST and
gRPC (metadata `authorization: Bearer <token>`). Off unless VAE_AUTH_TOKEN or
VAE_AUTH_TOKEN_FILE is set; health and metrics paths stay public unless removed from
VAE_AUTH_PUBLIC_PATHS (probes and Prometheus usually carry no token). An entry ending in `/*`
is a prefix: `/ui/*` keeps the explorer's static files public (they hold no data; the page
asks for the token and sends it with every API call it makes). The rule for pages: when the
explorer is public, so are the other pages that hold no data, the landing page `/`, the API
reference `/docs` with its document `/docs.json` and Swagger UI's files; remove `/ui` and
`/ui/*` from the public paths to put them all behind the token (docs/SECURITY.md).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from service.config import Settings

CHALLENGE = (b"www-authenticate", b'Bearer realm="vae"')
# public together with the explorer (/ui): the pages that describe the service, no data
PAGES = {"/", "/docs", "/docs.json", "/static_content/*"}


class BearerAuth:
    def __init__(self, token: str, public: set[str]):
        self.expected = f"Bearer {token}".encode()
        self.public = {p for p in public if not p.endswith("/*")}
        self.prefixes = tuple(p[:-1] for p in public if p.endswith("/*"))  # keeps the "/"

    @classmethod
    def from_settings(cls, st: Settings) -> BearerAuth | None:
        """None when authentication is off; SystemExit for a setting that cannot work."""
        if st.auth_token and st.auth_token_file:
            raise SystemExit("VAE_AUTH_TOKEN and VAE_AUTH_TOKEN_FILE: set one, not both")
        token = st.auth_token
        if st.auth_token_file:
            try:
                token = Path(st.auth_token_file).read_text().strip()
            except OSError as exc:
                raise SystemExit(f"VAE_AUTH_TOKEN_FILE: {st.auth_token_file}: "
                                 f"{exc.strerror}") from None
            if not token:
                raise SystemExit(f"VAE_AUTH_TOKEN_FILE: {st.auth_token_file} is empty")
        if not token:
            return None
        if len(token) < 16:
            raise SystemExit("VAE_AUTH_TOKEN: use at least 16 characters")
        public = {p.strip() for p in st.auth_public_paths.split(",") if p.strip()}
        if public & {"/ui", "/ui/*"}:
            public |= PAGES
        return cls(token, public)

    def allows(self, path: str, authorization: bytes | str | None) -> bool:
        if path in self.public or (path.startswith(self.prefixes) and ".." not in path):
            return True
        if isinstance(authorization, str):
            authorization = authorization.encode("latin-1", "replace")
        # constant time: the comparison does not tell how much of a guess was right
        return authorization is not None and hmac.compare_digest(authorization, self.expected)
