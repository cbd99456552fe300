"""How an agent generates: `AgentConfig`, and its `agent.json` beside trained weights.

The config is a pydantic model like the sections of `rayrl.config`: a wrong key or
value fails at construction (and on assignment) with a `ConfigError` that names
the key. It imports neither torch nor vLLM, so an agent can be described, saved
and shipped to a Ray actor without loading a model.

Training writes a trained policy as a Hugging Face folder. `save_agent_config`
adds `agent.json` to it: every field except `model_name`, because the folder
itself is the model. Loading the folder later restores the same prompt and
sampling settings with the trained weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayrl.config import DEFAULT_MODEL, ConfigError

AGENT_FILE = "agent.json"
"""Name of the agent settings file inside a saved model folder."""


def _describe(err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(config)"
        if e["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        else:
            problems.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(problems)


class AgentConfig(BaseModel):
    """Model, prompt and sampling settings of one agent.

    Raises:
        ConfigError: on an unknown key or an invalid value, at construction or assignment.
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    model_name: str = DEFAULT_MODEL
    """Model the agent generates with: a local Hugging Face folder (a trained
    checkpoint) or a name `rayrl.model_store.resolve_model` finds offline."""

    system_prompt: str | None = "You are a helpful assistant."
    """Prepended to every conversation that does not start with its own system
    message; None sends no system message."""

    temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature (0 is greedy)."""

    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""

    max_new_tokens: int = Field(256, ge=1)
    """Most tokens of one reply (fewer when the context is nearly full)."""

    memory_window: int | None = Field(None, ge=1)
    """Messages of history kept when generating, counted after the system prompt
    (which is always kept); None keeps the whole conversation."""

    stop: list[str] = Field(default_factory=list)
    """Strings that end a reply early (not included in it)."""

    max_model_len: int = Field(2048, ge=16)
    """Longest prompt plus reply the engine accepts; older messages are dropped
    from prompts that would not fit."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weight dtype of the local engine ("auto": bfloat16 where the hardware computes it
    natively, else float32)."""

    kv_cache_gb: int = Field(1, ge=1)
    """KV cache of the local engine on CPU machines, in GiB."""

    seed: int = 0
    """Sampling seed of the local engine."""

    endpoint: str | None = None
    """Base URL of an OpenAI-compatible server to generate with instead of a local engine
    (`rayrl serve`'s `http://127.0.0.1:8000/v1`, say); `model_name` is then the name sent."""

    endpoint_token: str | None = None
    """Bearer token for `endpoint`."""

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(f"AgentConfig: {_describe(err)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            raise ConfigError(f"AgentConfig: {_describe(err)}") from None


def save_agent_config(config: AgentConfig, path: str | Path) -> Path:
    """Write `agent.json` (every field but `model_name`) into a saved model folder.

    Args:
        config: the agent's settings.
        path: the model folder (created if missing).

    Returns:
        The path of the written file.
    """
    if not isinstance(config, AgentConfig):
        raise TypeError(f"config must be an AgentConfig, got {type(config).__name__}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / AGENT_FILE
    target.write_text(json.dumps(config.model_dump(exclude={"model_name"}), indent=2) + "\n")
    return target


def read_agent_config(path: str | Path) -> dict[str, Any]:
    """The settings stored in a model folder's `agent.json` ({} when it has none).

    Args:
        path: the model folder.

    Raises:
        ConfigError: the file is not a JSON object of AgentConfig fields, or sets
            `model_name` (the folder is the model).
    """
    target = Path(path) / AGENT_FILE
    if not target.is_file():
        return {}
    try:
        data = json.loads(target.read_text())
    except ValueError as err:
        raise ConfigError(f"{target}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{target}: expected a JSON object of AgentConfig fields")
    if "model_name" in data:
        raise ConfigError(f"{target}: model_name must not be set here; the folder itself is the model")
    unknown = sorted(set(data) - set(AgentConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"{target}: unknown key {unknown[0]!r}; AgentConfig fields: {list(AgentConfig.model_fields)}"
        )
    return data


__all__ = ["AGENT_FILE", "AgentConfig", "read_agent_config", "save_agent_config"]
