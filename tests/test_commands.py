"""The installed commands (pyproject's [project.scripts]): --help that explains every option,
usage errors as one line with exit status 2, a wheel holding the product's packages only, and
`vae-serve`'s metrics directory of its own (two servers on one host keep their own counts)."""

from __future__ import annotations

import dataclasses
import glob
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, Server

BIN = Path(sys.executable).parent
COMMANDS = ["vae-serve", "vae-train", "vae-export", "vae-import-onnx", "vae-client", "vae-jobs"]


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_every_training_option_has_a_meaning():
    from training.cli import HELP
    from training.train import TrainConfig

    assert set(HELP) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(meaning.strip() for meaning, _ in HELP.values())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_the_options(command, tmp_path):
    r = _run(command, "--help", cwd=tmp_path)  # from anywhere, not only the checkout
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: " + command) and "Traceback" not in r.stderr


def test_help_shows_defaults_and_choices():
    train = _run("vae-train", "--help").stdout
    assert "--arch {mlp,conv}" in train and "(default: mlp)" in train
    assert "--epochs EPOCHS" in train and "(default: 150)" in train
    serve = _run("vae-serve", "--help").stdout
    from service.config import Settings

    for name in Settings.model_fields:  # every setting is an option, named with its variable
        assert f"--{name.replace('_', '-')}" in serve and f"VAE_{name.upper()}" in serve
    assert "--provider {auto,cpu,cuda}" in serve


@pytest.mark.parametrize("argv, says", [
    (["vae-train", "--arch", "cnn"], "invalid choice: 'cnn'"),
    (["vae-train", "--data", "mnist", "--data-path", "/no/such/folder"], "/no/such/folder"),
    (["vae-train", "--data", "npy"], "--data npy needs --data-path"),
    (["vae-train", "--epochs", "many"], "invalid int value: 'many'"),
    (["vae-serve", "--max-n", "-3"], "--max-n -3: Input should be greater than or equal to 1"),
    (["vae-serve", "--provider", "gpu"], "invalid choice: 'gpu'"),
    (["vae-serve", "--models", "Not A Name"], "naming rule"),
    (["vae-export", "--checkpoint", "/no/such.pt", "--name", "x"], "--checkpoint /no/such.pt"),
    (["vae-export", "--checkpoint", "x.pt", "--name", "Bad Name"], "naming rule"),
    (["vae-import-onnx", "--encoder", "e", "--decoder", "d", "--input-shape", "1,8",
      "--name", "x"], "is not C,H,W"),
    (["vae-client", "sample", "--n", "x"], "invalid int value: 'x'"),
    (["vae-client", "nonsense"], "invalid choice: 'nonsense'"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, says):
    r = _run(*argv)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and argv[0] in lines[0] and says in lines[0], r.stderr
    assert r.stdout == ""


def test_the_wheel_installs_the_products_packages_only(tmp_path):
    import shutil

    src = tmp_path / "src"  # a copy: building writes build/ and egg-info beside the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv*", ".git", "runs", "models", "data", "results", "node_modules", "build",
        "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("vae_serving-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"service", "training", "export", "modelrepo", "jobs"}
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    assert all(f"{c} =" in scripts for c in COMMANDS)
    assert "service/doors/ui/index.html" in names  # the page ships with the service


def _count(url: str, endpoint: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vae_requests_total{") and f'endpoint="{endpoint}"' in line \
                and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _metrics_dirs(pid: int) -> list[str]:
    return glob.glob(str(Path(tempfile.gettempdir()) / f"vae-serve-metrics-{pid}-*"))


def test_two_servers_on_one_host_keep_their_own_metrics(trained):
    """BentoML's default would give both one directory, which the second start empties."""
    a = Server(trained["repository"])
    with a:
        for _ in range(3):
            assert httpx.post(a.url + "/sample", json={"n": 1}, timeout=30).status_code == 200
        assert _count(a.url, "/sample") == 3
        (dir_a,) = _metrics_dirs(a.proc.pid)
        with Server(trained["repository"]) as b:
            for _ in range(5):
                assert httpx.post(b.url + "/sample", json={"n": 1}, timeout=30).status_code == 200
            (dir_b,) = _metrics_dirs(b.proc.pid)
            assert dir_a != dir_b
            assert _count(a.url, "/sample") == 3  # the second start wiped nothing of the first
            assert _count(b.url, "/sample") == 5
        assert not Path(dir_b).exists()  # removed when its server stopped
        assert _count(a.url, "/sample") == 3
    assert not Path(dir_a).exists()


def test_ctrl_c_in_a_terminal_does_not_wait_out_the_drain(trained, tmp_path):
    """stdin a TTY: the drain is 0 s, so the stop is immediate (a server in a terminal has no
    balancer to drain from); without a TTY the default drain holds (tests/test_drain.py)."""
    import signal
    import time

    from support.servers import free_port

    primary, secondary = os.openpty()
    port = free_port()
    env = {**os.environ, "VAE_MODEL_REPOSITORY": str(trained["repository"]),
           "VAE_MODEL_NAME": "digits", "VAE_GRPC_PORT": str(free_port())}
    env.pop("VAE_DRAIN_S", None)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.serve", "--host", "127.0.0.1",
                                 "--port", str(port)], stdin=secondary, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends the foreground process
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(primary)
        os.close(secondary)
    text = log.read_text()
    assert "started from a terminal, so Ctrl-C stops at once" in text
    assert "serving for 0.0 s more" in text  # each worker's drain: none


def test_train_and_export_print_only_their_own_lines_in_a_log(tmp_path):
    """Not a terminal: plain epoch lines instead of a progress bar, a total time that counts
    the whole run, and an export without the libraries' warnings."""
    import re

    ckpt = tmp_path / "c.pt"
    r = _run("vae-train", "--epochs", "4", "--hidden", "32", "--latent-dim", "2", "--iwae-k",
             "5", "--threads", "1", "--out", str(ckpt), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\r" not in r.stdout + r.stderr  # no bar redrawn into the log
    assert "epoch 4/4: recon" in r.stdout
    total, epochs = map(float, re.search(r" in ([\d.]+) s \(epochs ([\d.]+) s", r.stdout).groups())
    assert total >= epochs
    r = _run("vae-export", "--checkpoint", str(ckpt), "--repository", str(tmp_path / "repo"),
             "--name", "tiny", "--variants", "int8", cwd=tmp_path)  # int8: the quantizer's
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert lines and all(line.startswith("INFO export: ") for line in lines), lines


def test_the_sweep_removes_only_directories_nobody_uses(tmp_path):
    """A start removes metrics directories of killed instances, but not while a worker of one
    still writes there (it drains for a while after its arbiter's death)."""
    from service.serve import PREFIX, _sweep_stale

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead, alive = int(done.stdout), os.getpid()
    cases = {"dead arbiter, dead worker": (dead, dead, False),
             "dead arbiter, live worker": (dead, alive, True),
             "live arbiter": (alive, dead, True)}
    dirs = {}
    for i, (case, (arbiter, worker, _)) in enumerate(cases.items()):
        d = dirs[case] = tmp_path / f"{PREFIX}{arbiter}-{i}"
        d.mkdir()
        (d / f"counter_{worker}.db").write_bytes(b"")
        (d / f"gauge_livesum_{worker}.db").write_bytes(b"")
    (tmp_path / f"{PREFIX}notapid").mkdir()  # not one of ours: left alone
    _sweep_stale(tmp_path)
    assert {case: dirs[case].exists() for case in cases} == \
        {case: kept for case, (_, _, kept) in cases.items()}
    assert (tmp_path / f"{PREFIX}notapid").exists()
