import pytest

from rayrl.model_store import ModelNotFoundError, resolve_model


def test_default_model_resolves_offline(default_model):
    from pathlib import Path

    path = Path(default_model)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == default_model


def test_local_folder_is_used_as_is(tiny_model):
    assert resolve_model(tiny_model) == tiny_model


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve_model("someone/not-a-model")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))
