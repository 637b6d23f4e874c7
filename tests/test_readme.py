"""README's five-minute tour, run as written: every code block of that section is taken from
README.md itself and executed against a real server (`vae-serve` of the digits model on
free ports), with only the `export HTTP=... GRPC=...` line given this server's addresses, as a
reader would after reading what `make serve` printed. So the tour cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, Server

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def tour_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(section)]


@pytest.fixture(scope="module")
def tour(trained, tmp_path_factory):
    work = tmp_path_factory.mktemp("tour")
    (work / ".venv").symlink_to(Path(sys.executable).parents[1])  # the tour's `.venv/bin/...`
    with Server(trained["repository"]) as srv:
        yield srv, work


def test_the_tour_has_a_shell_block_and_two_python_blocks():
    kinds = [k for k, _ in tour_blocks()]
    assert kinds.count("sh") == 1 and kinds.count("python") == 2, kinds


def test_the_shell_block_runs_as_written(tour):
    srv, work = tour
    (script,) = [code for kind, code in tour_blocks() if kind == "sh"]
    assert script.startswith("export HTTP=http://127.0.0.1:3000 GRPC=127.0.0.1:8001")
    script = re.sub(r"^export HTTP=\S+ GRPC=\S+", f"export HTTP={srv.url} GRPC={srv.grpc_url}",
                    script)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    answers, text, i = [], out.stdout, 0  # curl prints each answer without a newline
    while (i := text.find("{", i)) >= 0:
        obj, i = json.JSONDecoder().raw_decode(text, i)
        answers.append(obj)
    model, encode, decode, recon, score, neighbors, compare, refused = answers
    assert model["name"] == "digits"
    assert len(encode["mu"][0]) == model["latent_dim"] and len(encode["z"][0]) == 2
    assert len(decode["outputs"][0][0]) == 8 and len(recon["outputs"]) == 1
    assert set(score) >= {"neg_elbo", "nll_iwae", "percentile"}
    assert len(neighbors["indices"][0]) == 3
    assert compare["overlap"][0] == pytest.approx(1.0) and compare["w2"][0] == pytest.approx(0)
    assert refused["error"] == "n: 100000 exceeds the limit of 1024 (VAE_MAX_N)"
    assert "wrote grid.png: 16 samples" in out.stdout
    assert (work / "grid.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("which", [0, 1])
def test_the_python_blocks_run_as_written(tour, which):
    srv, work = tour
    code = [code for kind, code in tour_blocks() if kind == "python"][which]
    # the venv's python, as README says, from a folder that is not the checkout
    env = {**os.environ, "HTTP": srv.url, "GRPC": srv.grpc_url}
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = r"digits \d+ \(4, \d+\) \d\.\d+" if which == 0 else r"\(4, \d+\) version \d+"
    assert re.fullmatch(expected, out.stdout.strip()), out.stdout


def test_the_page_and_the_landing_page_answer(tour):
    srv, _ = tour
    assert httpx.get(srv.url + "/ui/", timeout=10).status_code == 200
    landing = httpx.get(srv.url + "/", timeout=10)
    assert landing.status_code == 200
    for link in ('href="ui/"', 'href="docs"', 'href="docs.json"', 'href="metrics"'):
        assert link in landing.text, link
