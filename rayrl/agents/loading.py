"""Load an agent from a model folder that training saved.

Training writes the trained policy as a Hugging Face folder (config.json,
weights, tokenizer) and, beside them, `agent.json` with the agent's prompt and
sampling settings. Loading reverses it: the folder becomes `model_name`, the
settings come back from `agent.json`, and explicit overrides win over both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from rayrl.agents.agent import Agent, MultiTurnAgent, check_model_folder
from rayrl.agents.config import AgentConfig, read_agent_config

_AgentT = TypeVar("_AgentT", bound=Agent)


async def load_agent_from_checkpoint(
    path: str | Path,
    agent_class: type[_AgentT] = MultiTurnAgent,  # type: ignore[assignment]
    *,
    agent_kwargs: dict[str, Any] | None = None,
    initialize: bool = True,
    **config_overrides: Any,
) -> _AgentT:
    """Build an agent that generates with the model saved at `path`.

    Args:
        path: a Hugging Face model folder, optionally with `agent.json`.
        agent_class: the agent class; it is built as `agent_class(config, **agent_kwargs)`.
        agent_kwargs: further constructor arguments (e.g. `tools=` for a `ToolAgent`).
        initialize: start the agent's engine before returning.
        **config_overrides: `AgentConfig` fields that replace the saved ones.

    Raises:
        FileNotFoundError: the folder or its config.json is missing.
        TypeError: `agent_class` is not an `Agent` subclass, or `model_name` is overridden.
        ConfigError: `agent.json` or an override is not a valid AgentConfig field.
    """
    if not (isinstance(agent_class, type) and issubclass(agent_class, Agent)):
        raise TypeError(f"agent_class must be a subclass of Agent, got {agent_class!r}")
    if "model_name" in config_overrides:
        raise TypeError("model_name cannot be overridden: the checkpoint folder is the model")
    folder = check_model_folder(path)
    fields = {**read_agent_config(folder), **config_overrides}
    config = AgentConfig(model_name=str(folder), **fields)
    agent = agent_class(config, **(agent_kwargs or {}))
    if initialize:
        await agent.initialize()
    return agent


__all__ = ["load_agent_from_checkpoint"]
