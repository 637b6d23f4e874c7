"""Offline jobs (jobs/, `vae-jobs`) on this machine: every input format gives the same answers,
bad items are reported without stopping the job, an interrupted job resumes with every item
written exactly once, and the answers equal the running service's /encode and /score."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, Server

pa = pytest.importorskip("pyarrow", reason="the `jobs` extra (make test installs it)")
import pyarrow.parquet as pq  # noqa: E402

from jobs.cli import main  # noqa: E402
from jobs.work import read_results  # noqa: E402


@pytest.fixture(scope="module")
def digits_u8() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.rint(load_digits().images[:300] * 255 / 16).astype(np.uint8)  # [300, 8, 8]


def run(op: str, repo: Path, inp: Path, out: Path, *extra: str) -> int:
    try:
        main([op, "--repository", str(repo), "--model", "digits", "--input", str(inp),
              "--output", str(out), *extra])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def write_idx(path: Path, arr: np.ndarray) -> None:
    head = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.tobytes())


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_every_input_format_gives_the_same_posteriors(trained, digits_u8, tmp_path):
    repo, x = trained["repository"], digits_u8
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "a.npz", other=np.zeros(3), images=x[:, None])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x)
    folder = tmp_path / "pngs"
    for i, img in enumerate(x):  # nested folders: the relative path is the id
        (folder / f"{i % 3}").mkdir(parents=True, exist_ok=True)
        (folder / f"{i % 3}" / f"{i:04d}.png").write_bytes(png_bytes(img))
    pixels = pa.array([r.reshape(-1).tolist() for r in x], pa.list_(pa.uint8()))
    pq.write_table(pa.table({"name": [f"item{i}" for i in range(len(x))], "pixels": pixels}),
                   tmp_path / "list.parquet")
    pq.write_table(pa.table({"png": [png_bytes(r) for r in x]}), tmp_path / "png.parquet")
    cases = {"npy": ("a.npy",), "npz": ("a.npz", "--key", "images"),
             "idx": ("t10k-images-idx3-ubyte.gz",), "pngs": ("pngs",),
             "list": ("list.parquet", "--column", "pixels", "--id-column", "name"),
             "png": ("png.parquet",)}
    got = {}
    for name, (inp, *extra) in cases.items():
        assert run("encode", repo, tmp_path / inp, tmp_path / f"{name}.out", "--shard-size",
                   "128", *extra) == 0, name
        got[name] = read_results(tmp_path / f"{name}.out")
    ref = got["npy"]
    assert list(ref["id"][:3]) == ["0", "1", "2"] and ref["mu"].shape == (300, 4)
    for name, res in got.items():
        order = np.argsort([int(Path(i).stem.removeprefix("item")) for i in res["id"]])
        np.testing.assert_allclose(res["mu"][order], ref["mu"], atol=1e-6, err_msg=name)
        np.testing.assert_allclose(res["sigma"][order], ref["sigma"], atol=1e-6, err_msg=name)
    assert got["pngs"]["id"][0] == "0/0000.png" and got["list"]["id"][0] == "item0"


def test_bad_items_are_reported_and_the_rest_written(trained, digits_u8, tmp_path):
    x = digits_u8[:50].astype(np.float32) / 255
    x[3, 0, 0], x[7, 1, 1] = np.nan, 2.0
    np.save(tmp_path / "x.npy", x)
    code = run("score", trained["repository"], tmp_path / "x.npy", tmp_path / "out", "--k", "4")
    assert code == 3  # some items refused
    res = read_results(tmp_path / "out")
    assert len(res["id"]) == 48 and "3" not in res["id"] and "7" not in res["id"]
    errors = [json.loads(line) for f in sorted((tmp_path / "out" / "_errors").glob("*.jsonl"))
              for line in f.read_text().splitlines()]
    assert {e["id"]: e["reason"] for e in errors} == {
        "3": "values must be finite (NaN or Inf found)",
        "7": "values must lie in [0.0, 1.0], got [0, 2]"}
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "good.png").write_bytes(png_bytes(digits_u8[0]))
    (folder / "big.png").write_bytes(png_bytes(np.zeros((9, 9), np.uint8)))
    (folder / "notes.png").write_text("not an image")
    assert run("encode", trained["repository"], folder, tmp_path / "imgs.out") == 3
    res = read_results(tmp_path / "imgs.out")
    assert list(res["id"]) == ["good.png"]
    reasons = {json.loads(line)["id"]: json.loads(line)["reason"] for line in
               (tmp_path / "imgs.out" / "_errors" / "part-00000.jsonl").read_text().splitlines()}
    assert reasons == {"big.png": "image is 9x9, the model takes 8x8",
                       "notes.png": "not a readable image (PNG or JPEG)"}


def test_an_interrupted_job_resumes_with_every_item_once(trained, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.random((40_000, 1, 8, 8), dtype=np.float32))
    args = ["score", "--repository", str(trained["repository"]), "--model", "digits",
            "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "out"), "--k", "16",
            "--shard-size", "1000", "--batch-size", "64", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "jobs", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "out").glob("part-*.parquet"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-shard, as a lost machine would
    proc.wait()
    parts = len(list((tmp_path / "out").glob("part-*.parquet")))
    assert 2 <= parts < 40
    r = subprocess.run([sys.executable, "-m", "jobs", *args, "--resume"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{40_000 - parts * 1000:,} items written" in r.stdout  # only what was missing
    res = read_results(tmp_path / "out")
    assert sorted(map(int, res["id"])) == list(range(40_000))  # each item exactly once
    again = tmp_path / "whole"
    assert run("score", trained["repository"], tmp_path / "x.npy", again, "--k", "16",
               "--shard-size", "5000") == 0  # other shards, other batches: the same numbers
    whole = read_results(again)
    np.testing.assert_allclose(res["neg_elbo"], whole["neg_elbo"], rtol=1e-6)
    other = [("8" if a == "16" else a) for a in args]  # --k 8 now
    r = subprocess.run([sys.executable, "-m", "jobs", *other, "--batch-size", "32", "--resume"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "holds another job (differs in k)" in r.stderr, r.stderr


def test_answers_equal_the_services(trained, digits_u8, tmp_path):
    x = digits_u8[:64, None].astype(np.float32) / 255
    np.save(tmp_path / "x.npy", x)
    repo = trained["repository"]
    assert run("encode", repo, tmp_path / "x.npy", tmp_path / "enc", "--fields",
               "mu,sigma,logvar", "--samples", "3") == 0
    assert run("reconstruct", repo, tmp_path / "x.npy", tmp_path / "rec") == 0
    enc, rec = read_results(tmp_path / "enc"), read_results(tmp_path / "rec")
    assert enc["z"].shape == (64, 3, 4)
    table = pq.read_table(tmp_path / "enc")  # the folder reads as one table
    assert table.num_rows == 64 and table.schema.metadata[b"model"] == b"digits"
    with Server(repo) as srv:
        http = httpx.post(srv.url + "/encode", json={"inputs": x.tolist()}, timeout=60).json()
        back = httpx.post(srv.url + "/reconstruct", json={"inputs": x.tolist()},
                          timeout=60).json()
    for f in ("mu", "sigma", "logvar"):
        np.testing.assert_allclose(enc[f], np.array(http[f]), atol=1e-5)
    np.testing.assert_allclose(rec["outputs"], np.array(back["outputs"]), atol=1e-5)


def test_usage_errors_are_one_line(trained, tmp_path):
    bin_ = Path(sys.executable).parent / "vae-jobs"
    r = subprocess.run([str(bin_), "encode", "--model", "digits", "--repository",
                        str(trained["repository"]), "--input", str(tmp_path / "nope.npy"),
                        "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
