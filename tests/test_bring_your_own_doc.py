"""docs/BRING_YOUR_OWN.md's complete example, executed as written: its Python block (train a
classic fc VAE on MNIST digits, export it), then its shell block against a real server (the
`bentoml serve` line stands for the server this test starts on a free port)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import MNIST_DIR, ROOT, Server

DOC = ROOT / "docs" / "BRING_YOUR_OWN.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"{MNIST_DIR} is absent")
def test_the_complete_example_runs_as_written(tmp_path):
    code = blocks("python")[0].replace("../shared/data/mnist", str(MNIST_DIR))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("models/mine/1"), out.stdout
    shell = blocks("sh")[0]
    serve, *rest = re.sub(r"\\\n\s*|\|\n\s*", lambda m: "| " if "|" in m[0] else "",
                          shell).strip().splitlines()
    assert serve.startswith("VAE_MODEL_NAME=mine bentoml serve")
    with Server(tmp_path / "models", {"VAE_MODEL_NAME": "mine"}) as srv:
        for line in rest:
            cmd = line.replace("localhost:3000", srv.url.removeprefix("http://"))
            r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60,
                               cwd=tmp_path, env={**os.environ, "PATH": f"{sys.prefix}/bin:"
                                                  + os.environ["PATH"]})
            answer = json.loads(r.stdout)
            assert "error" not in answer, (line, answer)
    assert answer["indices"] and len(answer["indices"][0]) == 3  # the neighbors call
