"""Stage and room boundaries: export does not import the training loop, loadtests and the
service never import torch, service/ imports point one way (doors -> operations -> runtime),
and an export needs nothing but its checkpoint."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

ROOMS = ["runtime", "operations", "lifecycle", "doors"]  # each may import only earlier rooms
ALLOWED = {"runtime": set(), "operations": {"runtime"}, "lifecycle": {"operations"},
           "doors": {"runtime", "operations", "lifecycle"}}


def _modules_after(code: str) -> set[str]:
    code += "\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split())


def test_export_does_not_import_the_training_loop():
    mods = _modules_after("import export.onnx_export, export.reference, export.variants")
    assert "training.train" not in mods and "training.model" in mods


def test_loadtests_and_service_never_import_torch():
    mods = _modules_after("import loadtests.run, loadtests.soak, loadtests.locustfile as lf\n"
                          "lf._images_for([1, 8, 8])")
    assert "torch" not in mods
    mods = _modules_after("import service.doors.front_door, service.doors.v2_grpc, "
                          "service.doors.openapi, service.client")
    assert "torch" not in mods


def test_service_imports_point_one_way():
    for room in ROOMS:
        for path in (ROOT / "service" / room).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    parts = node.module.split(".")
                    if parts[0] == "service" and len(parts) > 1 and parts[1] in ROOMS:
                        assert parts[1] == room or parts[1] in ALLOWED[room], \
                            f"{path.relative_to(ROOT)} imports {node.module}"


def test_checkpoint_records_its_heldout_items_and_export_needs_nothing_else(trained, tmp_path):
    from export.onnx_export import export_checkpoint

    payload = torch.load(trained["checkpoint"], weights_only=True)
    held = payload["heldout"]
    assert held["x"].shape[0] == payload["data"]["heldout_items"] == len(held["labels"])
    # without the recorded items an export is refused, unless told to reload the data
    del payload["heldout"]
    bare = tmp_path / "bare.pt"
    torch.save(payload, bare)
    with pytest.raises(ValueError, match="--reload-data"):
        export_checkpoint(bare, tmp_path / "repo", "digits", variants=())
    assert not (tmp_path / "repo" / "digits" / "1").exists()
    path = export_checkpoint(bare, tmp_path / "repo", "digits", variants=(), reload_data=True)
    assert (path / "reference.npz").is_file()
    payload["train_config"]["data"], payload["train_config"]["data_path"] = "npy", "/missing.npy"
    torch.save(payload, bare)
    with pytest.raises(ValueError, match="cannot be read"):
        export_checkpoint(bare, tmp_path / "repo", "digits", variants=(), reload_data=True)
