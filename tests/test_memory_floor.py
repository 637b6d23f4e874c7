"""service/memory_floor.py: the container's memory limit read from cgroup v2 or v1, and a start
refused with a message naming the limit, the need and what to change when the limit is below
what the service needs at least (the Docker test runs it under a real limit)."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.memory_floor import floor_mb, memory_limit_mb, refusal


def test_the_limit_from_cgroup_v2_and_v1(tmp_path):
    assert memory_limit_mb(tmp_path / "none") is None
    (tmp_path / "memory.max").write_text("max\n")
    assert memory_limit_mb(tmp_path) is None
    (tmp_path / "memory.max").write_text(str(512 * 2**20))
    assert memory_limit_mb(tmp_path) == 512
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert memory_limit_mb(v1.parent) is None
    (v1 / "memory.limit_in_bytes").write_text(str(60 * 2**20))
    assert memory_limit_mb(v1.parent) == 60


def test_a_start_below_the_floor_is_refused_with_what_to_change(trained, tmp_path):
    repo = Path(trained["repository"])
    settings = Settings(model_repository=str(repo), models="*", workers=2)
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(str(60 * 2**20))
    why = refusal(settings, cgroup)
    assert why is not None and "60 MB" in why and "VAE_WORKERS=2" in why and "digits" in why
    assert "docker run --memory" in why
    (cgroup / "memory.max").write_text(str(2048 * 2**20))
    assert refusal(settings, cgroup) is None
    assert floor_mb(2, {"m": 0}) > floor_mb(1, {"m": 0}) > 0
