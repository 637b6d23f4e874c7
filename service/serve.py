"""`vae-serve`: the service (HTTP and gRPC), each instance with its own metrics directory.

    vae-serve --host 127.0.0.1 --port 3000 --models digits,mnist

It is `bentoml serve service.app:VAEService` with two differences. Every VAE_* setting is also
an option here (`--max-n 64` is VAE_MAX_N=64; the environment still works, options win). And
BentoML keeps the workers' Prometheus files in one directory per BENTOML_HOME, which each
starting server empties: two servers of one user on one host would wipe and mix each other's
counts. This command gives each instance a directory of its own under the temporary folder,
created at start and removed at exit (left behind only by a SIGKILL; the next start removes
those of processes that are gone).

Started from a terminal (stdin a TTY), the drain after a stop signal is 0 s unless --drain-s or
VAE_DRAIN_S says otherwise: nothing balances traffic to a server in a terminal, and Ctrl-C
should stop it at once, not after VAE_DRAIN_S of not-ready serving.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import typing
from pathlib import Path

from pydantic import ValidationError

from modelrepo.cli import Parser, usage_error
from service import memory_floor
from service.config import Settings

PREFIX = "vae-serve-metrics-"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parser() -> Parser:
    p = Parser(prog="vae-serve",
               usage="vae-serve [--host HOST] [--port PORT] [--SETTING VALUE ...]",
               description=__doc__.split("\n\n", 2)[2].strip())
    p.add_argument("--host", default=os.environ.get("BENTOML_HOST", "0.0.0.0"),
                   help="HTTP address (environment: BENTOML_HOST)")
    p.add_argument("--port", type=int, default=int(os.environ.get("BENTOML_PORT", "3000")),
                   help="HTTP port (environment: BENTOML_PORT)")
    for name, field in Settings.model_fields.items():
        env = f"VAE_{name.upper()}"
        shown = "empty" if field.default == "" else field.default
        text = f"{field.description} (default: {shown}; environment: {env})"
        text = text.replace("%", "%%")
        kind = field.annotation
        if kind is bool:
            p.add_argument(_flag(name), action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=text)
        elif typing.get_origin(kind) is typing.Literal:
            p.add_argument(_flag(name), choices=typing.get_args(kind),
                           default=argparse.SUPPRESS, help=text)
        else:
            p.add_argument(_flag(name), type=kind, default=argparse.SUPPRESS, help=text,
                           metavar=name.upper())
    return p


def settings_env(given: dict[str, object]) -> dict[str, str]:
    """The environment variables that the given options set."""
    out = {}
    for name, value in given.items():
        if name in Settings.model_fields:
            out[f"VAE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) \
                else str(value)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _users(d: Path) -> list[int]:
    """The processes a metrics directory belongs to: the instance that made it (its name) and
    the workers that write in it (prometheus_client names each file after its writer's pid,
    e.g. counter_4242.db)."""
    pids = [int(d.name[len(PREFIX):].split("-", 1)[0])]
    for f in d.glob("*.db"):
        tail = f.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.append(int(tail))
    return pids


def _sweep_stale(tmp: Path) -> None:
    """Remove metrics directories of instances that were killed without cleaning up. A killed
    instance's workers outlive it for their drain (service/lifecycle/drain.py watch_parent):
    their directory stays until they are gone too, or their answers would fail on its files."""
    for d in tmp.glob(PREFIX + "*"):
        try:
            users = _users(d)
        except (ValueError, OSError):
            continue  # not one of ours, or gone meanwhile
        if not any(_alive(pid) for pid in users):
            shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = vars(parser().parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    env = settings_env(args)
    if sys.stdin is not None and sys.stdin.isatty() and "VAE_DRAIN_S" not in {**os.environ, **env}:
        env["VAE_DRAIN_S"] = "0"
        print("vae-serve: started from a terminal, so Ctrl-C stops at once (no drain; "
              "--drain-s to set one)", file=sys.stderr, flush=True)
    os.environ.update(env)
    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        flag = f"{_flag(where)} {args[where]}" if where in args else where
        usage_error("vae-serve", f"{flag}: {err['msg']}")
    if not 0 < port < 65536:
        usage_error("vae-serve", f"--port {port}: must lie in [1, 65535]")
    why = memory_floor.refusal(settings)
    if why is not None:  # in a container: a message in its log, not a silent OOM kill
        print(f"vae-serve: refusing to start: {why}", file=sys.stderr, flush=True)
        sys.exit(1)

    tmp = Path(tempfile.gettempdir())
    _sweep_stale(tmp)
    metrics_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=tmp))
    try:
        use_metrics_dir(metrics_dir)
        from bentoml_cli.cli import cli

        cli.main(["serve", "service.app:VAEService", "--host", host, "--port", str(port)],
                 prog_name="vae-serve")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def use_metrics_dir(path: Path) -> None:
    """The one place that reaches inside BentoML: its container's multiprocess directory,
    which `bentoml serve` empties and hands to its workers as PROMETHEUS_MULTIPROC_DIR (the
    same override BentoML's own pytest plugin makes; tests/test_serve_command.py fails when
    BentoML stops honouring it)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.prometheus_multiproc_dir.set(str(path))


if __name__ == "__main__":
    sys.exit(main())
