"""The model registry's rules without a server: names, the default model, readiness, V2 names,
and what export and the settings refuse."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from modelrepo.repository import ModelRepositoryError, list_models, name_problem, staging_dir
from service.config import Settings
from service.errors import ModelNotFound
from service.operations import v2
from service.runtime.engine import ModelSet
from service.runtime.registry import ModelRegistry


def _registry(names: list[str], **settings) -> ModelRegistry:
    models = {n: ModelSet(n, {1: SimpleNamespace(manifest=SimpleNamespace(name=n, version=1))})
              for n in names}
    return ModelRegistry(Settings(**settings), models)  # type: ignore[arg-type]


@pytest.mark.parametrize("name, ok", [("digits", True), ("a", True), ("mnist-2_b", True),
                                      ("0x", True), ("Digits", False), ("a.b", False),
                                      ("-a", False), ("_a", False), ("a" * 63, True),
                                      ("a" * 64, False), ("", False), ("é", False)])
def test_the_naming_rule(name, ok):
    assert (name_problem(name) is None) == ok


def test_folders_are_sorted_into_models_and_bad_names(tmp_path):
    for name in ("mnist", "digits", "Bad.Name", ".staging-x", "x y"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    assert list_models(tmp_path) == (["digits", "mnist"], ["Bad.Name", "x y"])
    assert list_models(tmp_path / "absent") == ([], [])


def test_export_refuses_a_name_that_breaks_the_rule(tmp_path):
    with pytest.raises(ModelRepositoryError, match="naming rule"):
        staging_dir(tmp_path, "My.Model")
    assert not (tmp_path / "My.Model").exists()


@pytest.mark.parametrize("env, names, default", [
    ({}, ["digits"], "digits"),
    ({"models": "mnist,digits"}, ["mnist", "digits"], "mnist"),
    ({"models": "mnist, digits,mnist"}, ["mnist", "digits"], "mnist"),
    ({"models": "mnist,digits", "default_model": "digits"}, ["mnist", "digits"], "digits"),
    ({"models": "*"}, None, "digits"),  # with *: the alphabetically first served
    ({"models": "*", "default_model": "mnist"}, None, "mnist"),
])
def test_names_and_the_default_model(env, names, default):
    st = Settings(**env)
    assert st.model_names == names
    assert _registry(["mnist", "digits"], **env).default_name == default


@pytest.mark.parametrize("env, message", [
    ({"models": "Digits"}, "naming rule"), ({"models": " , "}, "no model name"),
    ({"models": "a,b", "default_model": "c"}, "not one of"),
    ({"model_name": "x.y"}, "naming rule")])
def test_bad_names_in_the_settings_are_refused(env, message):
    with pytest.raises(ValueError, match=message):
        Settings(**env)


def test_get_names_the_served_models():
    reg = _registry(["mnist", "digits"], models="*")
    assert reg.get(None).name == "digits" and reg.get("mnist").name == "mnist"
    with pytest.raises(ModelNotFound, match=r"'nope' is not served \(served: digits, mnist\)"):
        reg.get("nope")
    empty = _registry([], models="*")
    with pytest.raises(ModelNotFound, match="none yet"):
        empty.get(None)


def test_readiness_follows_the_named_models():
    assert _registry(["digits"], models="digits,mnist").not_ready_because() == \
        "models not loaded yet: mnist"
    assert _registry(["digits", "mnist"], models="digits,mnist").not_ready_because() is None
    assert _registry([], models="*").not_ready_because() is not None
    assert _registry(["mnist"], models="*").not_ready_because() is None


def test_v2_names():
    assert v2.split_name("encoder") == (None, "encoder")
    assert v2.split_name("mnist.sample") == ("mnist", "sample")
    for bad in ("mnist", "mnist.nope", ".encoder", "a.b.c"):
        with pytest.raises(ModelNotFound):
            v2.split_name(bad)
    reg = _registry(["mnist", "digits"], models="*")
    assert v2.served_model(reg, "encoder") == "digits"
    assert v2.served_model(reg, "mnist.decoder") == "mnist"
    assert v2.served_model(reg, "nope.decoder") == ""
    assert v2.model_ready(reg, "mnist.encoder", None) and not v2.model_ready(reg, "x.encoder", "")


def test_a_repository_gone_for_a_moment_retires_nothing(tmp_path):
    import asyncio

    reg = _registry(["digits"], models="*", model_repository=str(tmp_path / "unmounted"))
    asyncio.run(reg.refresh())
    assert reg.names == ["digits"] and reg.get(None).name == "digits"
