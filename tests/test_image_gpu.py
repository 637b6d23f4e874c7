"""The gpu image (`make image-gpu`, which builds it and runs this module; not part of
`make test`), checked on a machine without a GPU: every shared library of onnxruntime's CUDA
provider and of the CUDA/cuDNN wheels resolves inside the image except the driver
(libcuda.so.1, which the NVIDIA container runtime injects from the host); the service falls
back to the CPU with VAE_PROVIDER=auto and refuses to start with VAE_PROVIDER=cuda."""

from __future__ import annotations

import os

import httpx
import pytest

from support import image

IMAGE = os.environ.get("VAE_GPU_IMAGE", "localhost/vae-serving:gpu")
SITE = "/venv/lib/python3.11/site-packages"
pytestmark = pytest.mark.skipif(
    not os.environ.get("VAE_GPU_IMAGE_TEST") or not image.available(IMAGE),
    reason="the gpu image is checked by `make image-gpu` (it builds the image)")


@pytest.fixture(scope="module")
def box():
    with image.container(IMAGE) as c:
        yield c


def test_every_cuda_library_resolves_but_the_driver(box):
    libs = [f"{SITE}/onnxruntime/capi/libonnxruntime_providers_cuda.so",
            *("/" + str(p.relative_to(box.root))
              for p in (box.root / SITE.lstrip("/") / "nvidia").rglob("lib*.so*"))]
    assert len(libs) > 10, libs  # cudart, cublas(Lt), cufft, curand, nvrtc, cudnn's parts
    r = box.run(["sh", "-c", 'for f in "$@"; do echo "== $f"; ldd "$f"; done', "-", *libs])
    assert r.returncode == 0, r.stderr
    missing = {line.split()[0] for line in r.stdout.splitlines() if "not found" in line}
    assert missing <= {"libcuda.so.1"}, missing
    provider = r.stdout.split(f"== {libs[0]}\n")[1].split("== ")[0]
    for needed in ("libcudart.so", "libcublas.so", "libcublasLt.so", "libcurand.so"):
        assert any(needed in line and f"{SITE}/nvidia/" in line
                   for line in provider.splitlines()), (needed, provider)


def test_auto_falls_back_to_the_cpu(box, tmp_path):
    with box.serve(tmp_path, {"VAE_PROVIDER": "auto"}) as srv:
        info = httpx.post(srv.url + "/model", json={}, timeout=30).json()
        r = httpx.post(srv.url + "/sample", json={"n": 2, "seed": 0}, timeout=30)
    assert info["provider"] == "CPUExecutionProvider" and r.status_code == 200


def test_cuda_without_a_gpu_refuses_to_start(box, tmp_path):
    srv = box.serve(tmp_path, {"VAE_PROVIDER": "cuda"})
    try:
        code = srv.proc.wait(timeout=120)
    finally:
        srv.stop()
    assert code != 0
    out = srv.output()
    assert "cuda" in out.lower() and "refusing to start" in out, out[-2000:]
