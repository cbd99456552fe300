"""Token ids of a conversation that grows turn by turn, without re-tokenising model text.

A model's reply is kept as the exact ids the engine sampled. What comes after it (the
end of the assistant turn, the next user or tool messages, the next assistant header)
is rendered with the model's own chat template and only that text is tokenised: the
reply is replaced by a placeholder while rendering, and the text on either side of the
placeholder is what gets encoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_PLACEHOLDER = "\x00RAYRL_ASSISTANT\x00"

# Model types for which `AutoTokenizer` keeps a folder's generic `TokenizersBackend` class
# (none of transformers' per-type corrections applies; tests/unit/test_tokens.py checks
# this against transformers' own tables).
GENERIC_TOKENIZER_MODEL_TYPES = frozenset({"llama"})


def load_tokenizer(model_path: str | Path) -> Any:
    """`AutoTokenizer.from_pretrained(model_path)`, the same object, without importing torch
    where the folder names the class AutoTokenizer returns for it.

    `AutoTokenizer` reads the model's config through `AutoConfig`, whose import pulls in
    transformers' generation code and torch: about 7 of the 10 CPU-seconds it costs a
    process that only needs a tokenizer (the agent loop, a data reader). A folder whose
    `tokenizer_config.json` names the generic `TokenizersBackend` (no custom code) and
    whose model type is in `GENERIC_TOKENIZER_MODEL_TYPES` gets that class directly;
    every other folder goes through `AutoTokenizer`.
    """
    folder = Path(model_path)
    try:
        settings = json.loads((folder / "tokenizer_config.json").read_text())
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        settings, model_type = {}, None
    if (
        settings.get("tokenizer_class") == "TokenizersBackend"
        and "auto_map" not in settings
        and model_type in GENERIC_TOKENIZER_MODEL_TYPES
        and (folder / "tokenizer.json").is_file()
    ):
        from transformers import TokenizersBackend

        return TokenizersBackend.from_pretrained(str(folder))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


class ChatTokens:
    """Chat-template rendering for one tokenizer.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.eos_text = tokenizer.eos_token or ""

    def render(self, messages: list[dict], add_generation_prompt: bool, **template_kwargs: Any) -> str:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False, **template_kwargs
        )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, messages: list[dict], **template_kwargs: Any) -> list[int]:
        """Ids of `messages` followed by the assistant header."""
        return self.encode(self.render(messages, True, **template_kwargs))

    def continuation_ids(
        self,
        history: list[dict],
        new_messages: list[dict],
        ended_with_eos: bool,
        **template_kwargs: Any,
    ) -> list[int]:
        """Ids that close the assistant turn generated after `history` and add
        `new_messages` and the next assistant header, as the template renders them.

        Args:
            history: the messages the assistant turn was generated from.
            new_messages: the messages that follow the assistant turn (user, tool).
            ended_with_eos: the engine stopped on the end-of-sequence token, which is
                then already among the generated ids.

        Raises:
            ValueError: the template renders the conversation so far differently once a
                message is added (such a template cannot be extended token by token).
        """
        with_reply = history + [{"role": "assistant", "content": _PLACEHOLDER}]
        closed = self.render(with_reply, False, **template_kwargs)
        reopened = self.render(with_reply + new_messages, True, **template_kwargs)
        if not reopened.startswith(closed):
            raise ValueError("the chat template renders a prefix differently once a turn is added")
        close = closed.split(_PLACEHOLDER, 1)[1]
        if ended_with_eos and self.eos_text and close.startswith(self.eos_text):
            close = close[len(self.eos_text) :]
        return self.encode(close + reopened[len(closed) :])


__all__ = ["ChatTokens"]
