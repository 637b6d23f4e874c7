"""Sampling from the data (/sample with prior "aggregate", labels, like) and calibrated outlier
flags (/score with fpr), against a real server, checked against the contract's exact recipes
computed here from the version's own reference.npz."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as th

from conftest import Server


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """The digits model (with its reference set) and `noref`, the same graphs imported
    without one."""
    from export.import_onnx import import_onnx

    repo = tmp_path_factory.mktemp("sampling") / "repository"
    import shutil

    shutil.copytree(trained["repository"], repo)
    v = trained["version_dir"]
    import_onnx(v / "encoder.onnx", v / "decoder.onnx", input_shape=[1, 8, 8],
                likelihood="bernoulli", decoder_output="probs", repository=repo, name="noref")
    with Server(repo, {"VAE_MODELS": "digits,noref"}) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as http:
        yield srv, http, dict(np.load(v / "reference.npz"))


def recipe(mu, sigma, n, temperature, seed):
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(mu), n)
    eps = rng.standard_normal((n, mu.shape[1])).astype(np.float32)
    return mu[i] + np.float32(temperature) * sigma[i] * eps, i


def test_aggregate_follows_the_exact_recipe(served):
    _, http, ref = served
    r = http.post("/sample", json={"prior": "aggregate", "n": 16, "seed": 3,
                                   "temperature": 0.7})
    assert r.status_code == 200, r.text
    got = r.json()
    z, i = recipe(ref["mu"], np.exp(0.5 * ref["logvar"]), 16, 0.7, 3)
    assert got["components"] == i.tolist()
    np.testing.assert_allclose(got["z"], z, atol=1e-6)
    assert np.array(got["outputs"]).shape == (16, 1, 8, 8)
    plain = http.post("/sample", json={"n": 2, "seed": 3}).json()
    assert "components" not in plain  # the standard prior's answer is v1's


def test_labels_pick_the_classes(served):
    _, http, ref = served
    got = http.post("/sample", json={"prior": "aggregate", "labels": [3, 7], "n": 32,
                                     "seed": 1}).json()
    keep = np.isin(ref["labels"], [3, 7])
    z, i = recipe(ref["mu"][keep], np.exp(0.5 * ref["logvar"][keep]), 32, 1.0, 1)
    assert got["components"] == i.tolist()  # indices into the chosen items, reference order
    np.testing.assert_allclose(got["z"], z, atol=1e-6)
    assert set(ref["labels"][keep][i].tolist()) <= {3, 7}


def test_like_samples_around_given_images(served):
    _, http, ref = served
    x = ref["x"][:3].tolist()
    got = http.post("/sample", json={"prior": "aggregate", "like": x, "n": 8,
                                     "seed": 5}).json()
    post = http.post("/encode", json={"inputs": x}).json()
    z, i = recipe(np.array(post["mu"], np.float32), np.array(post["sigma"], np.float32), 8,
                  1.0, 5)
    assert got["components"] == i.tolist()
    np.testing.assert_allclose(got["z"], z, atol=1e-5)


@pytest.mark.parametrize("body, status, says", [
    ({"prior": "aggregate", "labels": [42]}, 400, "labels: [42] match no reference item"),
    ({"labels": [1]}, 400, "only with prior \"aggregate\""),
    ({"prior": "aggregate", "labels": []}, 400, "labels"),
    ({"prior": "aggregate", "labels": [1], "like": [[0.5] * 64]}, 400, "labels: not with like"),
    ({"prior": "aggregate", "like": [[0.5] * 63]}, 400, "like: shape [1, 63]"),
    ({"prior": "mixture"}, 400, "prior"),
    ({"prior": "aggregate", "model": "noref"}, 404, "no reference posteriors"),
])
def test_sampling_errors(served, body, status, says):
    _, http, _ = served
    r = http.post("/sample", json=body)
    assert r.status_code == status and says in r.json()["error"], r.text


def test_v2_sample_takes_labels_and_like(served):
    srv, http, ref = served
    client = th.InferenceServerClient(srv.url.removeprefix("http://"))
    n = th.InferInput("n", [1], "INT32")
    n.set_data_from_numpy(np.array([6], np.int32))
    seed = th.InferInput("seed", [1], "INT64")
    seed.set_data_from_numpy(np.array([2], np.int64))
    labels = th.InferInput("labels", [1], "INT64")
    labels.set_data_from_numpy(np.array([4], np.int64))
    r = client.infer("sample", [n, seed, labels])
    http_answer = http.post("/sample", json={"prior": "aggregate", "labels": [4], "n": 6,
                                             "seed": 2}).json()
    np.testing.assert_allclose(r.as_numpy("z"), http_answer["z"], atol=1e-6)
    assert r.as_numpy("components").tolist() == http_answer["components"]
    client.close()


def test_the_default_score_does_not_move_with_the_seed(served):
    """sigma_points (the default): one item, one neg_elbo and percentile, whatever the seed;
    nll_iwae (k draws) moves, and stays below the sampled neg_elbo of the same draws."""
    _, http, ref = served
    x = ref["x"][:40].tolist()
    runs = [http.post("/score", json={"inputs": x, "seed": s}).json() for s in range(4)]
    for run in runs[1:]:
        assert run["percentile"] == runs[0]["percentile"]
        assert run["neg_elbo"] == runs[0]["neg_elbo"]
    assert runs[1]["nll_iwae"] != runs[0]["nll_iwae"]
    same = http.post("/score", json={"inputs": x, "seed": 1, "estimator": "sampled"}).json()
    assert all(i <= e + 1e-9 for i, e in zip(same["nll_iwae"], same["neg_elbo"], strict=True))


def test_fpr_gives_a_calibrated_threshold(served):
    _, http, ref = served
    x = ref["x"][:50].tolist()
    got = http.post("/score", json={"inputs": x, "k": 4, "seed": 9, "fpr": 0.1}).json()
    assert len(got["is_outlier"]) == 50
    assert got["is_outlier"] == [e > got["threshold"] for e in got["neg_elbo"]]
    # the threshold is the 0.9 quantile of the reference items' neg_elbo under the same
    # estimator: what /score answers for those items (sigma points: no draw involved)
    every = http.post("/score", json={"inputs": ref["x"].tolist(), "k": 4, "seed": 0,
                                      "fpr": 0.1}).json()
    assert every["threshold"] == pytest.approx(np.quantile(every["neg_elbo"], 0.9), rel=1e-9)
    assert every["threshold"] == got["threshold"]  # one version and k: one threshold
    assert np.mean(every["is_outlier"]) == pytest.approx(0.1, abs=1 / len(ref["x"]) + 1e-9)
    other = http.post("/score", json={"inputs": x, "k": 2, "estimator": "sampled",
                                      "fpr": 0.1}).json()
    assert other["threshold"] != got["threshold"]  # each estimator its own threshold
    r = http.post("/score", json={"inputs": x[:1], "fpr": 1.0})
    assert r.status_code == 400 and "fpr" in r.json()["error"]
    r = http.post("/score", json={"inputs": x[:1], "fpr": 0.1, "model": "noref"})
    assert r.status_code == 404 and "fpr: version 1 has no stored reference" in r.json()["error"]


def test_flags_by_latent_distance(served):
    """flag_by latent_w2: the threshold is the 1 - fpr quantile of the reference items'
    distances to their nearest other reference posterior (leave one out)."""
    from service.runtime import neighbors

    _, http, ref = served
    x = ref["x"][:30].tolist()
    got = http.post("/score", json={"inputs": x, "fpr": 0.05, "flag_by": "latent_w2"}).json()
    d = neighbors.distances(ref["mu"], ref["logvar"], ref["mu"], ref["logvar"], "w2")
    np.fill_diagonal(d, np.inf)
    assert got["threshold"] == pytest.approx(np.quantile(d.min(1), 0.95), rel=1e-9)
    assert got["is_outlier"] == [w > got["threshold"] for w in got["latent_w2"]]
    assert max(got["latent_w2"]) < 1e-2  # the reference items themselves: distance ~0
    far = http.post("/score", json={"inputs": [[0.0] * 32 + [1.0] * 32], "fpr": 0.05,
                                     "flag_by": "latent_w2"}).json()
    assert far["latent_w2"][0] > 0
