"""In-process inference for trying an agent before training it (the agent API).

`create_inference_engine(model_path, backend)` returns a local vLLM engine (no Ray)
that renders conversations with the model's own chat template; `MultiTurnInferenceEngine`
plays whole episodes with it, optionally through a `MultiTurnManager` for tool use;
`BatchInferenceManager` feeds long prompt lists through in batches. Training does
not use these classes: it runs episodes in the agent-loop actor against the rollout
actors, with exact token bookkeeping. These are for evaluation, demos and debugging.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from typing import TYPE_CHECKING, Any

from rayrl.agent.multi_turn import MultiTurnManager

if TYPE_CHECKING:  # the environments package imports this module (tool-use envs)
    from rayrl.envs.base import BaseEnvironment

BACKENDS = ("vllm", "sglang")


@contextlib.contextmanager
def _env(**values: str):
    """Environment variables set for the duration of the block, then restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _engine_dtype(name: str) -> str:
    import torch

    from rayrl.hardware import resolve_dtype

    return resolve_dtype(name, "cuda" if torch.cuda.is_available() else "cpu")


class InferenceBackendError(RuntimeError):
    """The requested inference backend is unknown or not installed."""


class VLLMInferenceEngine:
    """A local vLLM engine with chat-template rendering.

    Args:
        model_path: local folder or a name `rayrl.model_store.resolve_model` knows.
        dtype: weight dtype; "auto" is bfloat16 where the hardware computes it natively.
        max_model_len: longest sequence.
        kv_cache_gb: KV cache on CPU machines, in GiB.
        temperature: default sampling temperature.
        seed: sampling seed.
    """

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        max_model_len: int = 2048,
        kv_cache_gb: int = 1,
        temperature: float = 0.7,
        seed: int = 0,
    ):
        from transformers import AutoTokenizer
        from vllm import LLM

        from rayrl.model_store import resolve_model

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")

        self.model_path = resolve_model(model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.temperature = temperature
        # The engine core runs in this process: a spawned engine process re-imports the
        # caller's __main__, and a script that starts an engine at top level (no
        # `if __name__ == "__main__":` guard) would then start another one there. Set only
        # while the engine is built, so Ray workers started later do not inherit it.
        with _env(VLLM_ENABLE_V1_MULTIPROCESSING=os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")):
            self.llm = LLM(
                model=self.model_path,
                dtype=_engine_dtype(dtype),
                max_model_len=max_model_len,
                enforce_eager=True,
                seed=seed,
            )

    def generate(
        self, prompts: list[str], max_tokens: int = 256, temperature: float | None = None
    ) -> list[str]:
        """Complete raw text prompts."""
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=max_tokens, temperature=self.temperature if temperature is None else temperature
        )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def render(self, messages: list[dict[str, str]], tools: list[dict] | None = None) -> str:
        """A conversation as the chat template renders it, ready for the assistant's turn."""
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False
        )

    def chat(
        self,
        conversations: list[list[dict[str, str]]],
        max_tokens: int = 256,
        temperature: float | None = None,
        tools: list[dict] | None = None,
    ) -> list[str]:
        """The next assistant reply of each conversation."""
        return self.generate([self.render(c, tools) for c in conversations], max_tokens, temperature)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under this model's tokenizer."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def shutdown(self) -> None:
        """Free the engine."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None


def create_inference_engine(model_path: str, backend: str = "vllm", **kwargs: Any) -> VLLMInferenceEngine:
    """Build a local inference engine.

    Args:
        model_path: model folder or name (resolved offline).
        backend: "vllm" (installed with rayrl's `cpu`/`gpu` extras) or "sglang" (not supported yet).
        **kwargs: passed to the engine class.

    Raises:
        InferenceBackendError: unknown backend, or one that is not installed / supported.
    """
    if backend not in BACKENDS:
        raise InferenceBackendError(f"unknown inference backend {backend!r}; choose one of {BACKENDS}")
    if backend == "sglang":
        installed = importlib.util.find_spec("sglang") is not None
        raise InferenceBackendError(
            "the SGLang backend is not supported by rayrl yet"
            + ("" if installed else " (and the 'sglang' package is not installed)")
            + "; use backend='vllm'"
        )
    if importlib.util.find_spec("vllm") is None:
        raise InferenceBackendError("vLLM is not installed: install rayrl with the 'cpu' or 'gpu' extra")
    return VLLMInferenceEngine(model_path, **kwargs)


class BatchInferenceManager:
    """Sends prompts to an engine in fixed-size batches.

    Args:
        engine: an engine from `create_inference_engine`.
        batch_size: prompts per engine call.
    """

    def __init__(self, engine: VLLMInferenceEngine, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.engine = engine
        self.batch_size = batch_size

    def generate(self, prompts: list[str], **kwargs: Any) -> list[str]:
        """Completions of `prompts`, in order."""
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            out.extend(self.engine.generate(prompts[i : i + self.batch_size], **kwargs))
        return out

    def chat(self, conversations: list[list[dict[str, str]]], **kwargs: Any) -> list[str]:
        """Next assistant replies of `conversations`, in order."""
        out: list[str] = []
        for i in range(0, len(conversations), self.batch_size):
            out.extend(self.engine.chat(conversations[i : i + self.batch_size], **kwargs))
        return out


class MultiTurnInferenceEngine:
    """Plays an episode turn by turn: model reply, then tool result or environment reply.

    Args:
        engine: from `create_inference_engine`.
        max_turns: most model replies per episode.
        tool_manager: handles tool calls when `enable_tools` (its environment is the one the tools act on).
        enable_tools: route replies through `tool_manager` instead of `environment.step`.
        max_episode_tokens: stop once the conversation holds this many tokens.
        max_episode_seconds: stop once an episode has run this long.
    """

    def __init__(
        self,
        engine: VLLMInferenceEngine,
        max_turns: int = 5,
        tool_manager: MultiTurnManager | None = None,
        enable_tools: bool = False,
        max_episode_tokens: int | None = None,
        max_episode_seconds: float | None = None,
    ):
        if enable_tools and tool_manager is None:
            raise ValueError("enable_tools=True needs a tool_manager")
        self.engine = engine
        self.max_turns = max_turns
        self.tool_manager = tool_manager
        self.enable_tools = enable_tools
        self.max_episode_tokens = max_episode_tokens or engine.llm.llm_engine.model_config.max_model_len
        self.max_episode_seconds = max_episode_seconds

    def run_episode(
        self,
        environment: BaseEnvironment,
        initial_prompt: str | None = None,
        max_tokens: int = 256,
        task: Any = None,
    ) -> dict[str, Any]:
        """Play one episode and return its summary.

        Args:
            environment: the environment (with tools: the one the tools act on).
            initial_prompt: system prompt (default: the environment's prompt prefix);
                with tools, the parser's format instructions are appended.
            max_tokens: most new tokens per reply.
            task: passed to the environment's reset.

        Returns:
            `num_turns`, `total_reward`, `tools` (successful/failed calls, parse errors),
            `messages`, `final_response` and `stop_reason`.
        """
        t0 = time.perf_counter()
        tools = self.tool_manager if self.enable_tools else None
        system = initial_prompt if initial_prompt is not None else environment.get_prompt_prefix()
        if tools is not None:
            if tools.environment is not environment:
                raise ValueError("the tool manager's environment is not the environment of this episode")
            system = f"{system}\n\n{tools.instructions()}".strip()
            observation = tools.reset(task)
        else:
            observation = environment.reset_for(task)
        messages = [{"role": "system", "content": system}] if system else []
        messages += environment.get_demonstration()
        messages.append({"role": "user", "content": observation})
        rewards: list[float] = []
        stop_reason = "max_turns"
        for _ in range(self.max_turns):
            budget = self.max_episode_tokens - self.engine.count_tokens(self.engine.render(messages))
            if budget <= 0:
                stop_reason = "max_episode_tokens"
                break
            reply = self.engine.chat([messages], max_tokens=min(max_tokens, budget))[0]
            messages.append({"role": "assistant", "content": reply})
            if tools is not None:
                turn = tools.step(reply, observation)
                observation, done = turn.feedback, turn.done
                rewards.append(turn.reward)
            else:
                observation, reward, done, _ = environment.step(reply)
                rewards.append(float(reward))
            if done:
                stop_reason = "done"
                break
            messages.append({"role": "user", "content": observation})
            if self.max_episode_seconds is not None and time.perf_counter() - t0 > self.max_episode_seconds:
                stop_reason = "max_episode_seconds"
                break
        if tools is not None:
            summary = tools.episode_summary()
        else:
            summary = {
                "num_turns": len(rewards),
                "total_reward": sum(rewards),
                "tools": {"successful_tool_calls": 0, "failed_tool_calls": 0, "parse_errors": 0},
            }
        final = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
        summary.update(messages=messages, final_response=final, stop_reason=stop_reason)
        return summary
