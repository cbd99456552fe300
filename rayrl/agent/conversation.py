"""A conversation as a list of turns: what agents produce, environments answer and rewards read.

`ConversationTurn` is one message (`role`, `content`) plus what the code around it
wants to attach (`metadata`, a per-turn `reward`). Agents return one from
`process_turn`; reward functions written against turns (`compute_reward(turns,
context)`) receive the whole episode as a list of them. Plain chat dicts
(`{"role": ..., "content": ...}`) convert both ways.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConversationTurn:
    """One message of a conversation.

    Args:
        role: "system", "user", "assistant" or "tool".
        content: the message text.
        metadata: anything attached by the agent, environment or tools.
        reward: the reward this turn earned, when it has one.
    """

    role: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    reward: float | None = None

    def to_message(self) -> dict[str, str]:
        """The turn as a chat-template message."""
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_message(cls, message: Mapping[str, Any] | ConversationTurn) -> ConversationTurn:
        """A turn from a chat dict (extra keys go to `metadata`), or the turn itself."""
        if isinstance(message, ConversationTurn):
            return message
        extra = {k: v for k, v in message.items() if k not in ("role", "content")}
        return cls(str(message.get("role", "")), str(message.get("content") or ""), extra)


def as_turns(messages: Iterable[Mapping[str, Any] | ConversationTurn]) -> list[ConversationTurn]:
    """Chat dicts (or turns) as a list of `ConversationTurn`."""
    return [ConversationTurn.from_message(m) for m in messages]


def as_messages(turns: Iterable[Mapping[str, Any] | ConversationTurn]) -> list[dict[str, str]]:
    """Turns (or chat dicts) as chat-template messages."""
    return [ConversationTurn.from_message(t).to_message() for t in turns]
