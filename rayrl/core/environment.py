"""`rayrl.core.environment`: the environment classes (defined in `rayrl.envs`)."""

from rayrl.envs import BaseEnvironment, ConversationEnvironment, TaskEnvironment  # noqa: F401
