"""Pure logic of the service: tensor decoders/encoders, latent ops, provider and version choice."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from modelrepo import scoring
from modelrepo.repository import ModelRepositoryError
from service.errors import BadInput
from service.operations.tensors import decode_images, decode_latents, encode_images
from service.runtime import latent
from service.runtime.engine import select_providers, select_versions

S = [1, 8, 8]


def npy(arr) -> dict:
    buf = io.BytesIO()
    np.save(buf, arr)
    return {"npy": base64.b64encode(buf.getvalue()).decode()}


def png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (3, 64), (3, 8, 8)])
def test_json_shapes_accepted(shape):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    out = decode_images(x.tolist(), "inputs", S, (0.0, 1.0), 10)
    assert out.shape == (3, 1, 8, 8)
    np.testing.assert_array_equal(out.reshape(shape), x)


@pytest.mark.parametrize("value,match", [
    ([[0.0] * 64][0], "single item needs the batch axis"),
    ([[0.5] * 63], "shape"),
    ([[0.0] * 64, [0.0] * 3], "rectangular"),
    ([["a"] * 64], "rectangular"),
    ([[2.0] * 64], r"in \[0.0, 1.0\]"),
    ([[float("nan")] * 64], "finite"),
    ("abc", "expected a JSON array"),
    ({"npy": "!!"}, "base64"),
    ({"png": []}, "non-empty list"),
    ([[0.0] * 64] * 11, "limit of 10"),
    ([], "shape"),
])
def test_bad_images_are_refused_with_the_field_named(value, match):
    with pytest.raises(BadInput, match=match) as info:
        decode_images(value, "inputs", S, (0.0, 1.0), 10)
    assert info.value.status == 400 and "inputs" in info.value.message


def test_npy_uint8_is_scaled_and_pickle_refused():
    arr = np.full((2, 8, 8), 255, dtype=np.uint8)
    out = decode_images(npy(arr), "inputs", S, (0.0, 1.0), 10)
    assert out.shape == (2, 1, 8, 8) and out.max() == 1.0
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="pickle"):
        decode_images({"npy": base64.b64encode(buf.getvalue()).decode()}, "inputs", S,
                      (0.0, 1.0), 10)


def test_png_roundtrip_and_wrong_size():
    x = np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32)
    enc = encode_images(x, "png")
    back = decode_images(enc, "start", S, (0.0, 1.0), 10)
    np.testing.assert_allclose(back, x, atol=0.5 / 255 + 1e-6)
    with pytest.raises(BadInput, match="exactly 8x8"):
        decode_images({"png": [png(np.zeros((9, 8), np.uint8))]}, "start", S, (0.0, 1.0), 10)


def test_npy_output_roundtrips_exactly():
    x = np.random.default_rng(2).random((2, 3, 1, 8, 8)).astype(np.float32)
    raw = base64.b64decode(encode_images(x, "npy")["npy"])
    np.testing.assert_array_equal(np.load(io.BytesIO(raw), allow_pickle=False), x)
    assert len(encode_images(x, "png")["png"]) == 6  # paths flattened item-major


def test_latents_shape_checked():
    assert decode_latents([[0.0] * 4] * 2, "z", 4, 10).shape == (2, 4)
    with pytest.raises(BadInput, match=r"z: shape \[2, 3\] does not fit .* \[N, 4\]"):
        decode_latents([[0.0] * 3] * 2, "z", 4, 10)


def test_eps_rule_and_prefix_property():
    a = latent.draw_eps(7, (4, 3))
    b = latent.draw_eps(7, (8, 3))
    expected = np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(b[:4], a)
    assert a.dtype == np.float32


def test_posterior_samples_broadcast():
    mu, logvar = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    eps = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    sigma = latent.sigma_of(logvar)
    np.testing.assert_array_equal(latent.sample_posterior(mu, sigma, eps), 1 + eps)


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_endpoints_and_shape(method):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal((3, 5)).astype(
        np.float32)
    path = latent.interpolate(a, b, 6, method)
    assert path.shape == (3, 6, 5) and path.dtype == np.float32
    np.testing.assert_array_equal(path[:, 0], a)
    np.testing.assert_array_equal(path[:, -1], b)


def test_lerp_midpoint_and_slerp_keeps_norm():
    a, b = np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)
    np.testing.assert_allclose(latent.interpolate(a, b, 3, "lerp")[0, 1], [0.5, 0.5])
    mid = latent.interpolate(a, b, 3, "slerp")[0, 1]
    np.testing.assert_allclose(mid, [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    # parallel vectors: slerp falls back to lerp instead of dividing by zero
    par = latent.interpolate(a, 2 * a, 3, "slerp")
    np.testing.assert_allclose(par[0, 1], [1.5, 0.0], atol=1e-6)


def test_provider_selection():
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert select_providers("auto", [cpu]) == [cpu]
    assert select_providers("auto", [cuda, cpu]) == [cuda, cpu]
    assert select_providers("cpu", [cuda, cpu]) == [cpu]
    assert select_providers("cuda", [cuda, cpu]) == [cuda, cpu]
    with pytest.raises(ModelRepositoryError, match="onnxruntime-gpu"):
        select_providers("cuda", [cpu])


def test_version_selection():
    assert select_versions("latest", [1, 2, 5]) == [5]
    assert select_versions("all", [1, 2, 5]) == [1, 2, 5]
    assert select_versions("2,1", [1, 2, 5]) == [1, 2]
    with pytest.raises(ModelRepositoryError, match=r"\[3\]"):
        select_versions("3", [1, 2, 5])


def test_load_npy_equals_np_load_whatever_the_file():
    """The fast .npy reader gives np.load's array for numpy's usual files and hands every
    other file (other dtypes, Fortran order, big-endian, damaged) to np.load itself."""
    from service.operations.tensors import load_npy

    def npy(a) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        return buf.getvalue()

    rng = np.random.default_rng(0)
    arrays = [rng.random((1, 1, 28, 28), dtype=np.float32), rng.random(3),
              np.arange(12, dtype=np.uint8).reshape(3, 4), np.asarray(np.float32(2.5)),
              np.zeros((0, 4), np.float32), np.asfortranarray(rng.random((3, 4))),
              rng.random((2, 2)).astype(">f4"), np.arange(4)]
    for a in arrays:
        got, want = load_npy(npy(a)), np.load(io.BytesIO(npy(a)), allow_pickle=False)
        assert got.dtype == want.dtype and got.shape == want.shape, (a.dtype, a.shape)
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable and got.flags.c_contiguous == want.flags.c_contiguous
        np.testing.assert_array_equal(load_npy(npy(a)), want)  # a header seen before
    raw = npy(arrays[0])  # (its header is known now: damaged files must still be refused)
    for damaged in (raw[:-4], raw[:20], b"junk", raw.replace(b"'<f4'", b"'<f9'")):
        with pytest.raises(ValueError):
            load_npy(damaged)
    np.testing.assert_array_equal(load_npy(raw + b"extra"), arrays[0])  # as np.load reads it


def test_usable_cpus_is_the_affinity_capped_by_a_cgroup_quota(tmp_path):
    import os

    from service.runtime.engine import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path / "absent") == affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: still one to run on
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    assert usable_cpus(tmp_path) == min(affinity, 8)
    v1 = tmp_path / "v1"  # cgroup v1 (Docker 20.10 on this kind of host): --cpus 1
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(v1) == affinity
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cpus(v1) == 1


def test_inline_limit_widens_on_one_core_unless_the_thread_is_asked_for():
    from service.runtime.engine import inline_limit_ms

    assert inline_limit_ms(1.0, 2) == 1.0  # the thread can overlap the loop
    assert inline_limit_ms(1.0, 1) == 50.0  # it cannot: only the stall matters
    assert inline_limit_ms(80.0, 1) == 80.0
    assert inline_limit_ms(0.0, 1) == 0.0  # 0: always the thread


def test_onnxruntime_threads_do_not_spin_unless_asked():
    from service.config import Settings
    from service.runtime.engine import session_options

    key = "session.intra_op.allow_spinning"
    opts = session_options(Settings(intra_op_threads=2))
    assert opts.intra_op_num_threads == 2 and opts.get_session_config_entry(key) == "0"
    opts = session_options(Settings(intra_op_threads=2, intra_op_spinning=True))
    assert opts.get_session_config_entry(key) == "1"


def test_gaussian_divergences_match_numerical_integrals():
    """Closed forms vs integrals on a grid, one latent dimension at a time (diagonal
    Gaussians factorize: BC multiplies, KL and squared W2 add up)."""
    rng = np.random.default_rng(3)
    mu_a, mu_b = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    lv_a, lv_b = rng.normal(scale=0.7, size=(2, 3)), rng.normal(scale=0.7, size=(2, 3))
    got = scoring.gaussian_divergences(mu_a, lv_a, mu_b, lv_b)
    grid = np.linspace(-30, 30, 600001)
    dx = grid[1] - grid[0]

    def pdf(m, lv):
        return np.exp(-0.5 * (grid - m) ** 2 / np.exp(lv)) / np.sqrt(2 * np.pi * np.exp(lv))
    for i in range(2):
        bc, kl_ab, kl_ba = 1.0, 0.0, 0.0
        for d in range(3):
            p, q = pdf(mu_a[i, d], lv_a[i, d]), pdf(mu_b[i, d], lv_b[i, d])
            bc *= np.sum(np.sqrt(p * q)) * dx
            kl_ab += np.sum(p * (np.log(p + 1e-300) - np.log(q + 1e-300))) * dx
            kl_ba += np.sum(q * (np.log(q + 1e-300) - np.log(p + 1e-300))) * dx
        np.testing.assert_allclose(got["overlap"][i], bc, rtol=1e-6)
        np.testing.assert_allclose(got["kl_ab"][i], kl_ab, rtol=1e-5)
        np.testing.assert_allclose(got["kl_ba"][i], kl_ba, rtol=1e-5)
        sa, sb = np.exp(0.5 * lv_a[i]), np.exp(0.5 * lv_b[i])
        w2 = np.sqrt(np.sum((mu_a[i] - mu_b[i]) ** 2 + (sa - sb) ** 2))
        np.testing.assert_allclose(got["w2"][i], w2, rtol=1e-12)
    same = scoring.gaussian_divergences(mu_a, lv_a, mu_a, lv_a)
    np.testing.assert_allclose(same["overlap"], 1.0)
    np.testing.assert_allclose(same["kl_ab"], 0.0, atol=1e-12)
    np.testing.assert_allclose(same["w2"], 0.0)
    far = scoring.gaussian_divergences(np.zeros((1, 32)), np.full((1, 32), -8.0),
                                      np.full((1, 32), 5.0), np.full((1, 32), -8.0))
    assert far["overlap"][0] == 0.0 and np.isfinite(far["bhattacharyya"][0])  # underflow told


@pytest.mark.parametrize("measure", ["overlap", "kl", "w2", "euclidean"])
def test_neighbour_search_is_the_brute_force_ranking(measure, monkeypatch):
    from service.runtime import neighbors

    monkeypatch.setattr(neighbors, "CHUNK_ELEMENTS", 64)  # several chunks
    rng = np.random.default_rng(5)
    ref_mu, ref_lv = rng.normal(size=(40, 6)), rng.normal(scale=0.5, size=(40, 6))
    mu, lv = rng.normal(size=(7, 6)), rng.normal(scale=0.5, size=(7, 6))
    idx, scores = neighbors.search(mu, lv, ref_mu, ref_lv, 5, measure)
    for i in range(7):
        pairs = scoring.gaussian_divergences(np.repeat(mu[i:i + 1], 40, 0),
                                            np.repeat(lv[i:i + 1], 40, 0), ref_mu, ref_lv)
        dist = {"overlap": pairs["bhattacharyya"], "kl": pairs["kl_ab"], "w2": pairs["w2"],
                "euclidean": np.linalg.norm(mu[i] - ref_mu, axis=1)}[measure]
        want = np.argsort(dist, kind="stable")[:5]
        assert list(idx[i]) == list(want), (measure, i)
        expect = pairs["overlap"][want] if measure == "overlap" else dist[want]
        np.testing.assert_allclose(scores[i], expect, rtol=1e-9, atol=1e-12)
    assert neighbors.search(mu, lv, ref_mu, ref_lv, 100, measure)[0].shape == (7, 40)


def test_neighbours_need_a_reference_set():
    import asyncio
    from types import SimpleNamespace

    from service.config import Settings
    from service.errors import VersionNotFound
    from service.operations.api import Operations
    from service.operations.requests import Neighbors
    from service.runtime.engine import ModelSet
    from service.runtime.registry import ModelRegistry

    bare = SimpleNamespace(reference=None, manifest=SimpleNamespace(version=3, name="m"))
    st = Settings(model_name="m")
    ops = Operations(ModelRegistry(st, {"m": ModelSet("m", {3: bare})}), st)
    with pytest.raises(VersionNotFound, match="no reference set"):
        asyncio.run(ops.neighbors(Neighbors(inputs=[[0.5] * 64])))
    bare.reference = {"mu": np.zeros((2, 4), np.float32)}  # exported before logvar was stored
    with pytest.raises(VersionNotFound, match="log-variances"):
        asyncio.run(ops.neighbors(Neighbors(inputs=[[0.5] * 64], measure="kl")))


def test_shape_messages_name_the_models_shapes_and_hint_only_when_it_applies():
    with pytest.raises(BadInput) as info:
        decode_images([[0.5] * 63], "inputs", S, (0.0, 1.0), 10)
    assert info.value.message == ("inputs: shape [1, 63] does not fit the model's images, "
                                  "which are [N, 1, 8, 8], [N, 64], [N, 8, 8]")
    with pytest.raises(BadInput) as info:
        decode_images(np.zeros((1, 8, 8)).tolist()[0], "inputs", S, (0.0, 1.0), 10)
    assert info.value.message.endswith("a single item needs the batch axis too: [1, 8, 8]")
    with pytest.raises(BadInput) as info:
        decode_latents([0.0] * 2, "z", 2, 10)
    assert info.value.message == ("z: shape [2] does not fit the model's latent codes, which "
                                  "are [N, 2]; a single code needs the batch axis too: [1, 2]")
    with pytest.raises(BadInput) as info:
        decode_latents([[0.0] * 3], "z", 2, 10)
    assert "batch axis" not in info.value.message


def test_identical_posteriors_compare_to_exact_zeros():
    from modelrepo import scoring

    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    out = scoring.gaussian_divergences(mu, logvar, mu, logvar)
    for key in ("bhattacharyya", "kl_ab", "kl_ba", "w2"):
        assert (out[key] >= 0).all() and np.allclose(out[key], 0, atol=1e-12), key
    assert (out["overlap"] <= 1).all()


def test_a_jpeg_sent_as_png_is_named():
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="JPEG")
    with pytest.raises(BadInput) as info:
        decode_images({"png": [base64.b64encode(buf.getvalue()).decode()]}, "inputs", S,
                      (0.0, 1.0), 10)
    assert info.value.message.startswith("inputs.png[0]: not a PNG image (the bytes are a "
                                         "JPEG file); send PNG")
    assert "BytesIO" not in info.value.message


def test_unknown_field_names_are_quoted_cut_short():
    from service.operations.api import OPERATIONS

    with pytest.raises(BadInput) as info:
        OPERATIONS["/encode"].parse({"inputs": [[0.0] * 64], "x" * 100_000: 1})
    assert len(info.value.message) < 400 and "x" * 80 + "…" in info.value.message
