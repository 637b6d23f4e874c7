"""The built container image, run without a Docker engine: `buildah run --isolation chroot` of
the image's own CMD, as its own USER, with host networking on free loopback ports (the image's
CMD reads BENTOML_HOST/BENTOML_PORT and VAE_GRPC_HOST/VAE_GRPC_PORT from the environment).
Used by tests/test_image.py and benchmarks/image_figures.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.servers import Proc, _spawn, free_port

IMAGE = "localhost/vae-serving:latest"


def buildah(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def available(image: str = IMAGE) -> bool:
    """buildah is installed and the image exists in local storage."""
    return bool(shutil.which("buildah")) and buildah("inspect", "--type", "image", image,
                                                      check=False).returncode == 0


def config(image: str = IMAGE) -> dict:
    """The image's Docker config: Cmd, User, Env, Healthcheck, WorkingDir, ExposedPorts."""
    return json.loads(buildah("inspect", "--type", "image", image).stdout)["Docker"]["config"]


class Container:
    """A working container of the image (`buildah from`): run commands in it, see its files."""

    def __init__(self, image: str = IMAGE):
        self.name = f"vae-test-{uuid.uuid4().hex[:8]}"
        buildah("from", "--name", self.name, image)
        self.root = Path(buildah("mount", self.name).stdout.strip())  # its files, seen from here

    def argv(self, cmd: list[str], env: dict[str, str] | None = None) -> list[str]:
        """`buildah run` of cmd inside, as the image's USER, with host networking."""
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return ["buildah", "run", "--isolation", "chroot", "--network", "host", *flags,
                self.name, "--", *cmd]

    def run(self, cmd: list[str], env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(cmd, env), capture_output=True, text=True,
                              timeout=timeout)

    def serve(self, log_dir: Path, env: dict[str, str] | None = None) -> Proc:
        """The image's own CMD on free loopback ports; `with container.serve(...) as srv:`."""
        port, grpc_port = free_port(), free_port()
        env = {"BENTOML_HOST": "127.0.0.1", "BENTOML_PORT": str(port),
               "VAE_GRPC_HOST": "127.0.0.1", "VAE_GRPC_PORT": str(grpc_port), **(env or {})}
        log = Path(log_dir) / f"image-{port}.log"
        cfg = config(self.image)
        cmd = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
        popen = _spawn(self.argv(cmd, env), {}, log, pin=False)
        return Proc(popen, f"http://127.0.0.1:{port}", "/readyz", log=log,
                    grpc_url=f"127.0.0.1:{grpc_port}")

    def models(self) -> Path:
        """The model repository the image serves, seen from here: VAE_MODEL_REPOSITORY, a
        relative one under the bento's src/ (where BentoML's image serves from)."""
        cfg = config(self.image)
        env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
        repo = env["VAE_MODEL_REPOSITORY"]
        if not repo.startswith("/"):
            repo = f"{env['BENTO_PATH']}/src/{repo}"
        return self.root / repo.lstrip("/")

    def uid(self, user: str) -> int:
        """A user name or number of the image, as a number (from its /etc/passwd)."""
        if user.isdigit():
            return int(user)
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            name, _, uid, *_ = line.split(":")
            if name == user:
                return int(uid)
        raise KeyError(user)

    @property
    def image(self) -> str:
        return json.loads(buildah("inspect", self.name).stdout)["FromImage"]

    def remove(self) -> None:
        buildah("umount", self.name, check=False)
        buildah("rm", self.name, check=False)


@contextmanager
def container(image: str = IMAGE) -> Iterator[Container]:
    c = Container(image)
    try:
        yield c
    finally:
        c.remove()
