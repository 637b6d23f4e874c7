"""The real `bentoml serve` on a free loopback port, called over HTTP like an application would."""

from __future__ import annotations

import base64
import io
import re

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from conftest import CONFIGS, Server
from training.data import load_digits_data

Z = 4


@pytest.fixture(scope="module", params=list(CONFIGS))
def server(trained, request):
    """The real server in each configuration of conftest.CONFIGS."""
    with Server(trained["repository"], {"VAE_MAX_BODY_BYTES": str(1 << 20),
                                        **CONFIGS[request.param]}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def local(trained):
    """The same graphs in this process: what the server must agree with."""
    vdir = trained["version_dir"]
    opts = {"providers": ["CPUExecutionProvider"]}
    return (ort.InferenceSession(str(vdir / "encoder.onnx"), **opts),
            ort.InferenceSession(str(vdir / "decoder.onnx"), **opts))


@pytest.fixture(scope="module")
def digits():
    ds = load_digits_data()
    return ds.x[ds.heldout_idx[:5]]


def post(client, path, body, status=200):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


def test_health(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_model_metadata(client, trained):
    from modelrepo.manifest import Manifest

    m = Manifest.model_validate_json((trained["version_dir"] / "manifest.json").read_text())
    info = post(client, "/model", {})
    assert info["name"] == "digits" and info["version"] == 1 and info["versions"] == [1]
    assert info["input"] == {"shape": [1, 8, 8], "dtype": "float32", "range": [0.0, 1.0]}
    assert info["latent_dim"] == Z and info["likelihood"] == "bernoulli"
    assert info["graphs"]["encoder"]["sha256"] == m.graphs["encoder"].sha256
    assert info["graphs"]["decoder"]["sha256"] == m.graphs["decoder"].sha256
    assert info["provider"] == "CPUExecutionProvider"
    assert info["training"]["data"]["name"] == "digits"
    assert "heldout_neg_elbo" in info["training"]["metrics"]


def test_encode_returns_the_distribution(client, digits, local):
    out = post(client, "/encode", {"inputs": digits.tolist()})
    mu, sigma, logvar = (np.array(out[k], dtype=np.float32) for k in ("mu", "sigma", "logvar"))
    assert mu.shape == sigma.shape == logvar.shape == (5, Z) and "z" not in out
    l_mu, l_logvar = local[0].run(["mu", "logvar"], {"x": digits})
    np.testing.assert_allclose(mu, l_mu, atol=1e-5)
    np.testing.assert_allclose(logvar, l_logvar, atol=1e-5)
    np.testing.assert_allclose(sigma, np.exp(0.5 * l_logvar), atol=1e-5)


def test_encode_samples_follow_the_randomness_rule(client, digits):
    body = {"inputs": digits.reshape(5, 64).tolist(), "samples": 3, "seed": 11}
    out = post(client, "/encode", body)
    z = np.array(out["z"], dtype=np.float32)
    assert z.shape == (5, 3, Z)
    eps = np.random.default_rng(11).standard_normal((5, 3, Z)).astype(np.float32)
    mu, sigma = np.array(out["mu"], np.float32), np.array(out["sigma"], np.float32)
    np.testing.assert_allclose(z, mu[:, None] + sigma[:, None] * eps, atol=1e-5)
    assert post(client, "/encode", body)["z"] == out["z"]  # seeded: deterministic
    fresh = [post(client, "/encode", {**body, "seed": None})["z"] for _ in range(2)]
    assert fresh[0] != fresh[1]  # unseeded: fresh draws


def test_decode_of_encoded_mu_equals_local_onnxruntime(client, digits, local):
    mu = post(client, "/encode", {"inputs": digits[:, 0].tolist()})["mu"]
    out = np.array(post(client, "/decode", {"z": mu})["outputs"], dtype=np.float32)
    l_mu, _ = local[0].run(["mu", "logvar"], {"x": digits})
    (l_x,) = local[1].run(["x"], {"z": l_mu})
    assert out.shape == (5, 1, 8, 8)
    np.testing.assert_allclose(out, l_x, atol=1e-5)
    recon = np.array(post(client, "/reconstruct", {"inputs": digits.tolist()})["outputs"])
    np.testing.assert_allclose(recon, l_x, atol=1e-5)


def test_sample_prefix_property_and_temperature(client, local):
    four = post(client, "/sample", {"n": 4, "seed": 5, "temperature": 0.5})
    eight = post(client, "/sample", {"n": 8, "seed": 5, "temperature": 0.5})
    z4, z8 = np.array(four["z"], np.float32), np.array(eight["z"], np.float32)
    eps = np.random.default_rng(5).standard_normal((4, Z)).astype(np.float32)
    np.testing.assert_allclose(z4, np.float32(0.5) * eps, atol=1e-6)
    np.testing.assert_allclose(z8[:4], z4, atol=1e-6)
    (l_x,) = local[1].run(["x"], {"z": z4})
    np.testing.assert_allclose(np.array(four["outputs"]), l_x, atol=1e-5)


def test_output_formats(client):
    js = post(client, "/sample", {"n": 2, "seed": 1})
    npy = post(client, "/sample", {"n": 2, "seed": 1, "output_format": "npy"})
    arr = np.load(io.BytesIO(base64.b64decode(npy["outputs"]["npy"])), allow_pickle=False)
    np.testing.assert_array_equal(arr, np.array(js["outputs"], dtype=np.float32))
    png = post(client, "/sample", {"n": 2, "seed": 1, "output_format": "png"})
    assert len(png["outputs"]["png"]) == 2
    assert base64.b64decode(png["outputs"]["png"][0])[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_latents(client, method, local):
    a = np.random.default_rng(0).standard_normal((2, Z)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((2, Z)).astype(np.float32)
    out = post(client, "/interpolate", {"start_z": a.tolist(), "end_z": b.tolist(), "steps": 5,
                                        "method": method})
    z = np.array(out["z"], np.float32)
    x = np.array(out["outputs"], np.float32)
    assert z.shape == (2, 5, Z) and x.shape == (2, 5, 1, 8, 8)
    np.testing.assert_array_equal(z[:, 0], a)
    np.testing.assert_array_equal(z[:, -1], b)
    (l_x,) = local[1].run(["x"], {"z": z.reshape(-1, Z)})
    np.testing.assert_allclose(x.reshape(-1, 1, 8, 8), l_x, atol=1e-5)


def test_interpolate_images_starts_and_ends_at_their_mu(client, digits):
    out = post(client, "/interpolate", {"start": digits[:2].tolist(), "end": digits[2:4].tolist()})
    z = np.array(out["z"], np.float32)
    assert z.shape == (2, 8, Z)  # default steps = 8
    mu = np.array(post(client, "/encode", {"inputs": digits[:4].tolist()})["mu"], np.float32)
    np.testing.assert_allclose(z[:, 0], mu[:2], atol=1e-6)
    np.testing.assert_allclose(z[:, -1], mu[2:4], atol=1e-6)


ERRORS = [
    ("/encode", {"inputs": [[0.5] * 64], "samples": -1}, 400, "samples"),
    ("/encode", {"inputs": [0.5] * 64}, 400, "inputs"),
    ("/encode", {}, 400, "inputs"),
    ("/encode", {"inputs": [[7.0] * 64]}, 400, "inputs"),
    ("/encode", {"inputs": [[0.5] * 64], "samples": 10_000}, 400, "limit of 64"),
    ("/decode", {"z": [[0.0] * (Z + 1)]}, 400, "z"),
    ("/sample", {"n": 0}, 400, "n"),
    ("/sample", {"n": 2, "temperature": 0}, 400, "temperature"),
    ("/sample", {"n": 2, "output_format": "gif"}, 400, "output_format"),
    ("/interpolate", {"start_z": [[0.0] * Z]}, 400, "start_z"),
    ("/interpolate", {"start_z": [[0.0] * Z], "end_z": [[0.0] * Z], "steps": 1}, 400, "steps"),
    ("/sample", {"n": 1, "version": 9}, 404, "version"),
    ("/sample", {"n": "3"}, 400, "n"),
    ("/sample", {"n": True}, 400, "n"),
    ("/sample", {"n": 2, "temperature": 1e308}, 400, "temperature"),
    ("/encode", {"inputs": [[0.5] * 64], "seed": -1}, 400, "seed"),
    ("/reconstruct", {"inputs": [[0.5] * 64], "sample": "yes"}, 400, "sample"),
    ("/score", {"inputs": [[0.5] * 64], "k": 0}, 400, "k"),
    ("/decode", {"z": {"npy": "not base64!"}}, 400, "z.npy"),
    ("/encode", {"inputs": {"png": ["aGVsbG8="]}}, 400, "inputs.png[0]"),
]


@pytest.mark.parametrize("path,body,status,field", ERRORS)
def test_errors_are_json_objects_naming_the_field(client, path, body, status, field):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    data = r.json()
    assert isinstance(data, dict) and isinstance(data["error"], str)
    assert field in data["error"], data


def test_transport_errors(client):
    r = client.post("/encode", content=b'{"inputs": [[0', headers={"content-type":
                                                                   "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.post("/encode", content=b"inputs=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "Content-Type" in r.json()["error"]
    big = b'{"inputs": [' + b"0.0," * (300_000) + b'0.0]}'
    r = client.post("/encode", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.get("/no-such-endpoint")
    assert r.status_code == 404 and r.json()["error"]
    # the server is still fine afterwards
    assert post(client, "/sample", {"n": 1, "seed": 0})["z"]


def test_request_id_is_echoed_or_generated(client):
    r = client.post("/sample", json={"n": 1}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.post("/sample", json={"n": 0})
    assert r.headers["x-request-id"] and r.json()["request_id"] == r.headers["x-request-id"]


def _metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_count_requests(client, request):
    before = client.get("/metrics").text
    for _ in range(3):
        post(client, "/decode", {"z": [[0.0] * Z] * 2})
    client.post("/decode", json={"z": "nope"})
    after = client.get("/metrics").text
    ok = 'endpoint="/decode",model="digits",protocol="http",status="200"'
    bad = 'endpoint="/decode",model="digits",protocol="http",status="400"'
    assert _metric(after, "vae_requests_total", ok) - _metric(before, "vae_requests_total", ok) == 3
    assert _metric(after, "vae_requests_total", bad) - _metric(before, "vae_requests_total",
                                                                bad) == 1
    items = 'endpoint="/decode",model="digits",protocol="http"'
    assert _metric(after, "vae_items_total", items) - _metric(before, "vae_items_total",
                                                              items) == 6
    assert _metric(after, "vae_request_duration_seconds_count", items) >= 4
    assert re.search(r'^vae_model_info\{.*version="1".*\} 1\.0$', after, re.M)
    # BentoML's duplicate traffic series are off by default, there only where configured
    config = CONFIGS[request.node.callspec.params["server"]]
    assert ("bentoml_service_request_total" in after) == \
        (config.get("VAE_BENTOML_METRICS") == "true")
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_locust_smoke_has_no_failures(server, tmp_path):
    """A few seconds of the real locustfile, through `make loadtest`'s runner, against the
    real server: every user class sends requests, none fails (no timing asserted)."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    classes = ["EncodeOneUser", "EncodeBatchUser", "SampleUser", "InterpolateUser",
               "ReconstructUser", "ScoreUser", "MixUser"]  # weights 3,1,1,1,1,1,3 = 11 users
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--host", server.url, "--users", "11",
         "--spawn-rate", "11", "--run-time", "8s", "--p95-ms", "0", "--encoding", "npy",
         "--batch", "16", "--results", str(tmp_path), *classes],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["Name"]: r for r in csv.DictReader(open(tmp_path / "locust_stats.csv"))}
    for name in ("/encode [1]", "/encode [16]", "/sample", "/interpolate", "/reconstruct",
                 "/score"):
        assert int(rows[name]["Request Count"]) > 0, name
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert (tmp_path / "report.html").stat().st_size > 0


def test_score_matches_an_independent_torch_computation(client, digits, trained):
    import torch

    from training.model import kl_divergence, load_checkpoint

    out = post(client, "/score", {"inputs": digits.tolist(), "k": 1, "seed": 9,
                                  "estimator": "sampled"})
    neg_elbo = np.array(out["neg_elbo"])
    vae, _ = load_checkpoint(trained["checkpoint"])
    eps = np.random.default_rng(9).standard_normal((1, 5, Z)).astype(np.float32)[0]
    with torch.no_grad():
        x = torch.from_numpy(digits)
        mu, logvar = vae.encode(x)
        e = torch.from_numpy(eps)
        z = mu + torch.exp(0.5 * logvar) * e
        # sampled: -(log p(x|z) + log p(z) - log q(z|x)) at the draws (docs/API.md)
        log_q_over_p = 0.5 * (z**2 - e**2 - logvar).sum(1)
        want = vae.recon_nll(vae.decode_logits(z), x) + log_q_over_p
        sp = kl_divergence(mu, logvar)  # the default (sigma points): closed-form KL ...
    np.testing.assert_allclose(neg_elbo, want.numpy(), rtol=1e-4)
    assert np.all(np.array(out["nll_iwae"]) == neg_elbo)  # one draw: the same number
    assert all(0.0 <= p <= 100.0 for p in out["percentile"])
    assert post(client, "/score", {"inputs": digits.tolist(), "k": 1, "seed": 9,
                                   "estimator": "sampled"}) == out
    default = post(client, "/score", {"inputs": digits.tolist()})
    assert np.all(np.array(default["neg_elbo"]) > sp.numpy())  # ... plus -E log p(x|z) > 0


def test_iwae_tightens_with_k(client, digits):
    many = post(client, "/score", {"inputs": digits.tolist(), "k": 200, "seed": 1})
    assert np.mean(many["nll_iwae"]) <= np.mean(many["neg_elbo"])
    r = client.post("/score", json={"inputs": digits.tolist(), "k": 5000})
    assert r.status_code == 400 and "k" in r.json()["error"]


def test_latent_map(client):
    out = post(client, "/latent_map", {})
    assert np.array(out["points"]).shape == (359, 2) and len(out["labels"]) == 359
    assert out["projection"] == "pca" and set(out["labels"]) <= set(range(10))


def test_python_clients_sync_async_and_cli(server, digits, tmp_path):
    import asyncio
    import subprocess
    import sys

    from service.client import AsyncVAEClient, VAEClient, VAEError

    with VAEClient(server.url) as vae:
        enc = vae.encode(digits, samples=2, seed=4)
        assert enc["mu"].shape == (5, Z) and enc["z"].shape == (5, 2, Z)
        s = vae.sample(3, seed=2)
        assert s["z"].shape == (3, Z) and s["x"].shape == (3, 1, 8, 8)
        np.testing.assert_allclose(vae.decode(s["z"]), s["x"], atol=1e-6)
        path = vae.interpolate(start=digits[:1], end=digits[1:2], steps=4, method="slerp")
        assert path["x"].shape == (1, 4, 1, 8, 8)
        assert vae.reconstruct(digits).shape == (5, 1, 8, 8)
        assert vae.score(digits, k=2)["nll_iwae"].shape == (5,)
        assert vae.model()["latent_dim"] == Z and len(vae.latent_map()["points"]) == 359
        with pytest.raises(VAEError) as info:
            vae.sample(0)
        assert info.value.status == 400 and "n" in info.value.message

    async def run():
        async with AsyncVAEClient(server.url) as avae:
            return await asyncio.gather(avae.sample(3, seed=2), avae.encode(digits))

    a_sample, a_enc = asyncio.run(run())
    np.testing.assert_array_equal(a_sample["z"], s["z"])
    np.testing.assert_allclose(a_enc["mu"], enc["mu"], atol=1e-6)
    out = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, "-m", "service.client", "--url", server.url, "sample",
                           "--n", "16", "--seed", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(out).size == (8 * 66, 2 * 66)  # 8x8 digits enlarged 8 times, 1-px rims
    # --url after the subcommand works too; a server that is not there: one line, exit 2
    after = subprocess.run([sys.executable, "-m", "service.client", "model", "--url",
                            server.url], capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and '"latent_dim"' in after.stdout, after.stderr
    down = subprocess.run([sys.executable, "-m", "service.client", "sample", "--url",
                           "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 2 and "Traceback" not in down.stderr, down.stderr
    assert down.stderr.startswith("error: no answer from http://127.0.0.1:9"), down.stderr


def test_npy_and_png_inputs_equal_json(client, digits):
    from service.client import to_npy
    from service.operations.tensors import encode_images

    want = post(client, "/encode", {"inputs": digits.tolist()})["mu"]
    got = post(client, "/encode", {"inputs": to_npy(digits)})["mu"]
    np.testing.assert_allclose(got, want, atol=1e-6)
    as_u8 = np.rint(digits * 255).astype(np.uint8)
    buf = io.BytesIO()
    np.save(buf, as_u8[:, 0])  # uint8 [N, H, W], scaled by 1/255 on arrival
    u8 = post(client, "/encode", {"inputs": {"npy": base64.b64encode(buf.getvalue()).decode()}})
    quantized = post(client, "/encode", {"inputs": (as_u8 / 255.0).tolist()})["mu"]
    np.testing.assert_allclose(u8["mu"], quantized, atol=1e-6)
    png = post(client, "/encode", {"inputs": encode_images(digits, "png")})["mu"]
    np.testing.assert_allclose(png, quantized, atol=1e-6)


def test_the_api_documents_itself(client):
    """/docs.json: every operation with a description and an example request that the server
    accepts as it stands, the V2 REST routes too; Swagger UI at / and /docs, no trackers."""
    doc = client.get("/docs.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/encode", "/decode", "/sample", "/interpolate", "/reconstruct", "/score",
                 "/model", "/latent_map", "/compare"):
        op = doc["paths"][path]["post"]
        assert op["summary"] and op["description"], path
        example = op["requestBody"]["content"]["application/json"]["example"]
        r = client.post(path, json=example)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["x-model-version"] == "1"
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer",
                 "/v2/health/ready", "/v2/repository/index"):
        assert path in doc["paths"], path
    infer = doc["paths"]["/v2/models/{model}/infer"]["post"]
    example = infer["requestBody"]["content"]["application/json"]["example"]
    assert client.post("/v2/models/decoder/infer", json=example).status_code == 200
    r = client.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    assert "googletagmanager" not in r.text
    landing = client.get("/")  # the project's own page: what is served, and where to go
    assert landing.status_code == 200 and "<b>digits</b>, version <b>1</b>" in landing.text


def test_compare_gives_the_overlap_of_the_two_posteriors(client, digits):
    """POST /compare: per pair, the closed forms on the posteriors /encode returns; a digit
    against itself overlaps fully; pairs must match; unknown fields refused."""
    from modelrepo.scoring import gaussian_divergences

    a, b = digits[:3], digits[[1, 2, 0]]
    got = post(client, "/compare", {"a": a.tolist(), "b": b.tolist()})
    ea = post(client, "/encode", {"inputs": a.tolist()})
    eb = post(client, "/encode", {"inputs": b.tolist()})
    want = gaussian_divergences(np.array(ea["mu"]), np.array(ea["logvar"]),
                                np.array(eb["mu"]), np.array(eb["logvar"]))
    for key in ("overlap", "kl_ab", "kl_ba", "w2"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-9)
    assert all(0 < o < 1 for o in got["overlap"]) and all(k > 0 for k in got["kl_ab"])
    self_ = post(client, "/compare", {"a": a.tolist(), "b": a.tolist()})
    np.testing.assert_allclose(self_["overlap"], 1.0, atol=1e-6)
    np.testing.assert_allclose(self_["w2"], 0.0, atol=1e-6)
    r = client.post("/compare", json={"a": a.tolist(), "b": b[:2].tolist()})
    assert r.status_code == 400 and "pairs must match" in r.json()["error"]
    r = client.post("/compare", json={"a": a.tolist(), "b": b.tolist(), "c": 1})
    assert r.status_code == 400 and "c" in r.json()["error"]


def test_neighbors_find_the_reference_items_themselves(client, trained):
    """POST /neighbors with items of the reference set: each finds itself first (overlap
    ~1), with its stored image and label; k and measure are checked."""
    with np.load(trained["version_dir"] / "reference.npz") as f:
        ref = {k: f[k] for k in f.files}
    x = ref["x"][:3]
    for measure in ("overlap", "kl", "w2", "euclidean"):
        got = post(client, "/neighbors", {"inputs": x.tolist(), "k": 4, "measure": measure})
        assert np.array(got["indices"]).shape == (3, 4) and got["measure"] == measure
        assert [row[0] for row in got["indices"]] == [0, 1, 2], measure
        scores = np.array(got["scores"])
        if measure == "overlap":
            np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
            assert (np.diff(scores, axis=1) <= 1e-12).all()  # best (largest) first
        else:
            np.testing.assert_allclose(scores[:, 0], 0.0, atol=1e-3)
            assert (np.diff(scores, axis=1) >= -1e-12).all()
        out = np.array(got["outputs"])
        assert out.shape == (3, 4, 1, 8, 8)
        np.testing.assert_allclose(out[:, 0], x, atol=1e-6)
        assert got["labels"] == ref["labels"][np.array(got["indices"])].tolist()
    for bad in ({"k": 101}, {"k": 0}, {"measure": "cosine"}):
        r = client.post("/neighbors", json={"inputs": x.tolist(), **bad})
        assert r.status_code == 400 and next(iter(bad)) in r.json()["error"], r.text


def test_latent_map_tsne_and_the_quality_of_each_map(client, trained):
    """projection: tsne (computed at export) beside pca; each answers how well it separates
    the labels, equal to an independent computation on the returned points."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    for projection in ("pca", "tsne"):
        out = post(client, "/latent_map", {"projection": projection})
        points, labels = np.array(out["points"]), np.array(out["labels"])
        assert points.shape == (359, 2) and out["projection"] == projection
        q = out["quality"]
        np.testing.assert_allclose(q["silhouette"], silhouette_score(points, labels), atol=1e-5)
        knn = KNeighborsClassifier(6).fit(points, labels)  # 6: itself + 5 others
        neigh = knn.kneighbors(points, 6, return_distance=False)[:, 1:]
        votes = [np.bincount(labels[row], minlength=10).argmax() for row in neigh]
        assert abs(q["knn5_accuracy"] - np.mean(np.array(votes) == labels)) < 0.02
        assert (out["projection_components"] is None) == (projection == "tsne")
        assert out["mu"] is None  # only when asked: [M, Z] is large
    # with_mu: the reference items' mu (what /ui's t-SNE click averages), as /encode gives them
    mu = np.array(post(client, "/latent_map", {"projection": "tsne", "with_mu": True})["mu"])
    with np.load(trained["version_dir"] / "reference.npz") as f:
        x = f["x"][:4]
    assert mu.shape == (359, post(client, "/model", {})["latent_dim"])
    np.testing.assert_allclose(mu[:4], post(client, "/encode", {"inputs": x.tolist()})["mu"],
                               atol=1e-5)
    r = client.post("/latent_map", json={"projection": "umap"})
    assert r.status_code == 400 and "projection" in r.json()["error"]


def test_a_mistyped_route_gets_the_operation_it_resembles(client):
    r = client.post("/encdoe", json={})
    assert r.status_code == 404
    assert r.json()["error"] == "POST /encdoe: Not Found; did you mean /encode?"
    assert "did you mean" not in client.post("/nothing-like-it", json={}).json()["error"]


def test_error_series_exist_before_the_first_error(client):
    """Every error reason of every API endpoint is there at 0 from the start (both protocols):
    a series born with its first count would hide that count from rate()/increase()."""
    client.get("/metrics")  # (a scrape is counted after it answers)
    text = client.get("/metrics").text
    for endpoint, protocol in (("/interpolate", "http"), ("/v2/models/sample/infer", "grpc")):
        for reason in ("method", "internal", "timeout", "overload"):
            labels = f'endpoint="{endpoint}",model="digits",protocol="{protocol}",reason="{reason}"'
            assert re.search(rf"^vae_errors_total\{{{re.escape(labels)}\}} ", text, re.M), labels
    before = _metric(text, "vae_errors_total", 'endpoint="/interpolate",model="digits",'
                     'protocol="http",reason="method"')
    for _ in range(3):
        assert client.get("/interpolate").status_code == 405
    after = _metric(client.get("/metrics").text, "vae_errors_total",
                    'endpoint="/interpolate",model="digits",protocol="http",reason="method"')
    assert after - before == 3
    # probes are not API traffic: their own counter, never vae_requests_total or in flight
    assert not re.search(r'^vae_requests(_total|_in_flight)\{endpoint="/(metrics|readyz|livez)"',
                         text, re.M)
    assert re.search(r'^vae_probes_total\{endpoint="/metrics",protocol="http",status="200"\} ',
                     text, re.M)
