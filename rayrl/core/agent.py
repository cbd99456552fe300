"""`rayrl.core.agent`: the agent classes (defined in `rayrl.agents`)."""

from rayrl.agent.conversation import ConversationTurn  # noqa: F401
from rayrl.agents import (  # noqa: F401
    Agent,
    AgentConfig,
    MultiTurnAgent,
    ToolAgent,
    load_agent_from_checkpoint,
)
