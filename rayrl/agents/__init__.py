"""Agents that answer conversations with a local model, optionally calling tools.

- `AgentConfig`: model, prompt and sampling settings (pydantic, validated).
- `MultiTurnAgent`: answers a conversation turn by turn; subclass it to customize a turn.
- `ToolAgent`: a multi-turn agent whose tools come from `Tool` objects or plain functions.
- `load_agent_from_checkpoint`: an agent on the weights training saved.

Importing this package loads neither torch nor vLLM; the engine starts on `initialize()`.
"""

from rayrl.agents.agent import Agent, MultiTurnAgent, apply_memory_window
from rayrl.agents.config import AGENT_FILE, AgentConfig, read_agent_config, save_agent_config
from rayrl.agents.function_tools import FunctionTool, tool_from_function, tool_from_spec
from rayrl.agents.loading import load_agent_from_checkpoint
from rayrl.agents.tool_agent import PARSERS, ToolAgent, ToolStep

__all__ = [
    "AGENT_FILE",
    "PARSERS",
    "Agent",
    "AgentConfig",
    "FunctionTool",
    "MultiTurnAgent",
    "ToolAgent",
    "ToolStep",
    "apply_memory_window",
    "load_agent_from_checkpoint",
    "read_agent_config",
    "save_agent_config",
    "tool_from_function",
    "tool_from_spec",
]
