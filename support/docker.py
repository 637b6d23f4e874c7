"""A Docker engine for the tests (tests/test_docker.py, `make test-docker`): the one that answers
already (DOCKER_HOST, or the default socket), used as it is; else Debian's `dockerd` (package
docker.io) started here with its own data root, exec root and socket under VAE_DOCKER_ROOT
(default /var/tmp/vae-docker), vfs storage and no bridge or iptables (the machines this runs
on have neither), and stopped afterwards. Containers then use the host's network.

Debian's docker client (/usr/bin/docker, 20.10: BuildKit built in) is preferred over another
one on PATH, whose `docker build` may want a buildx plugin that is not there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(os.environ.get("VAE_DOCKER_ROOT", "/var/tmp/vae-docker"))


def client() -> str:
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (
        shutil.which("docker") or "docker")


class Engine:
    def __init__(self, host: str | None):
        self.host = host  # None: the client's default (DOCKER_HOST or /var/run/docker.sock)

    def argv(self, *args: str) -> list[str]:
        return [client(), *(["-H", self.host] if self.host else []), *args]

    def run(self, *args: str, check: bool = True, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} failed ({r.returncode}): "
                               f"{r.stderr[-2000:]}")
        return r

    def answers(self) -> bool:
        try:
            return self.run("info", check=False, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


@contextmanager
def engine() -> Iterator[Engine]:
    """A Docker engine that answers; started (and stopped) here when none did."""
    existing = Engine(None)
    if shutil.which(client()) and existing.answers():
        yield existing
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise RuntimeError("no Docker engine answers and dockerd is not installed "
                           "(make docker-deps: Debian's docker.io)")
    for part in ("data", "exec"):
        (ROOT / part).mkdir(parents=True, exist_ok=True)
    sock = ROOT / "docker.sock"
    log = open(ROOT / "dockerd.log", "ab")
    proc = subprocess.Popen(
        [dockerd, "--data-root", str(ROOT / "data"), "--exec-root", str(ROOT / "exec"),
         "--pidfile", str(ROOT / "docker.pid"), "--host", f"unix://{sock}",
         "--storage-driver", "vfs", "--iptables=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ours = Engine(f"unix://{sock}")
    try:
        deadline = time.monotonic() + 60
        while not ours.answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dockerd did not start: "
                                   f"{(ROOT / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield ours
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # dockerd leaves its network namespace mounted under the exec root
        subprocess.run(["umount", str(ROOT / "exec" / "netns" / "default")],
                       capture_output=True)
        log.close()
