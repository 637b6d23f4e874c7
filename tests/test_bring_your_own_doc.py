"""docs/BRING_YOUR_OWN.md's complete example, executed as written with the venv's Python from a
folder that is not the checkout: its Python block (train a classic fc VAE on scikit-learn's
digits, which a fresh clone has, and export it), then its shell block against a real server
(the `vae-serve` line stands for the server this test starts on a free port)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import ROOT, Server

DOC = ROOT / "docs" / "BRING_YOUR_OWN.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def test_the_complete_example_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{sys.prefix}/bin:" + env["PATH"]  # what `. .venv/bin/activate` does
    out = subprocess.run(["python", "-c", blocks("python")[0]], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("models/mine/1"), out.stdout
    shell = blocks("sh")[0]
    lines = re.sub(r"\\\n\s*|\|\n\s*", lambda m: "| " if "|" in m[0] else "",
                   shell).strip().splitlines()
    telemetry, serve, *rest = lines
    assert "BENTOML_DO_NOT_TRACK=true" in telemetry and "ORT_DISABLE_TELEMETRY=1" in telemetry
    assert serve.startswith("vae-serve --model-name mine ")
    with Server(tmp_path / "models", {"VAE_MODEL_NAME": "mine"}) as srv:
        answers = []
        for line in rest:
            cmd = line.replace("localhost:3000", srv.url.removeprefix("http://"))
            r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60,
                               cwd=tmp_path, env=env)
            assert r.returncode == 0, (line, r.stderr)
            if r.stdout.strip():
                answers.append(json.loads(r.stdout))
    assert all("error" not in a for a in answers), answers
    model, sample, neighbors = answers
    assert model["name"] == "mine" and model["input"]["shape"] == [1, 8, 8]
    assert len(sample["z"]) == 2
    assert neighbors["indices"] and len(neighbors["indices"][0]) == 3
