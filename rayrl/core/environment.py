"""`rayrl.core.environment`: the environment and action-agent classes (defined in
`rayrl.envs` and `rayrl.agent.actions`)."""

from rayrl.agent.actions import ActionResult, BaseAgent  # noqa: F401
from rayrl.envs import BaseEnvironment, ConversationEnvironment, TaskEnvironment  # noqa: F401
