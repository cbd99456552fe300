"""The built-in queue-driven math agent and its environment service.

`MathMultiTurnAgent` ("math-multi-turn") asks the engines for a group of answers to a
question in one request, scores the whole group in one `env.step`, and gives every
wrong answer a "try again" user turn, up to `num_turns` answers. A right answer on turn
k (0-based) earns `discount ** k`.

`MathSingleStepEnv` ("math-single-step") scores a list of answers against the task's
reference: the last number of an answer when the reference is a number, math_verify
(in a check process with a deadline) otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rayrl.agent.async_agent import (
    Agent,
    AgentPrompt,
    BundledGenerationOutputs,
    EnvironmentService,
    GenerationConfig,
    Trajectory,
    register_agent,
    register_env,
)
from rayrl.agent.chat_tokens import ChatTokens


class MathSingleStepEnv(EnvironmentService):
    """Scores all answers of a group in one call: 1.0 right, 0.0 wrong.

    Args:
        timeout_s: deadline of one math_verify check.
    """

    def __init__(self, timeout_s: float = 10.0):
        super().__init__()
        self.timeout_s = timeout_s

    async def step(self, action: tuple[str, list[str]]):
        qid, answers = action
        reference = self.id2info[qid.split("@")[0]].get("answer")
        if reference is None:
            raise KeyError(f"task {qid!r} has no reference answer")
        scores = await asyncio.gather(*(asyncio.to_thread(self._score, a, str(reference)) for a in answers))
        return None, scores, True, False, {}

    def _score(self, answer: str, reference: str) -> float:
        from rayrl.rewards import answer_is_right

        return float(answer_is_right(answer, reference, self.timeout_s))


class MathMultiTurnAgent(Agent):
    """Answer, get told whether the answer is right, try again (see the module docstring).

    Args:
        tokenizer: the model's tokenizer (given by the agent loop).
        group_size: answers per question (given by the agent loop: `training.group_size`).
        num_turns: most answers per sample.
        discount: reward factor per extra turn a right answer needed.
        feedback: the user turn after a wrong answer.
    """

    def __init__(
        self,
        tokenizer: Any,
        group_size: int = 1,
        num_turns: int = 2,
        discount: float = 0.5,
        feedback: str = "Your answer is wrong. Try again: give just the number.",
    ):
        self.chat = ChatTokens(tokenizer)
        self.tokenizer = tokenizer
        self.group_size, self.num_turns = group_size, num_turns
        self.discount, self.feedback = discount, feedback

    async def collect_trajectory(self, prompt: AgentPrompt, env, obs_queue, act_queue) -> list[Trajectory]:
        n = self.group_size
        ids = [list(prompt.token_ids) for _ in range(n)]
        masks = [[0] * len(prompt.token_ids) for _ in range(n)]
        logps = [[0.0] * len(prompt.token_ids) for _ in range(n)]
        versions = [[-1] * len(prompt.token_ids) for _ in range(n)]
        history = [list(prompt.messages) for _ in range(n)]
        rewards, turns, first_try = [0.0] * n, [0] * n, [False] * n
        active = list(range(n))
        for turn in range(self.num_turns):
            outputs = await self._generate(prompt.qid, [ids[i] for i in active], obs_queue, act_queue)
            answers = []
            for i, out in zip(active, outputs, strict=True):
                ids[i] += out.token_ids
                masks[i] += [1] * len(out.token_ids)
                logps[i] += out.logprobs
                versions[i] += [out.weight_version] * len(out.token_ids)
                turns[i] += 1
                answers.append(self.tokenizer.decode(out.token_ids, skip_special_tokens=True))
            _, success, *_ = await env.step((prompt.qid, answers))
            still = []
            for i, out, answer, ok in zip(active, outputs, answers, success, strict=True):
                if ok:
                    rewards[i] = self.discount**turn
                    first_try[i] = turn == 0
                elif turn + 1 < self.num_turns:
                    feedback = [{"role": "user", "content": self.feedback}]
                    extra = self.chat.continuation_ids(history[i], feedback, out.finish_reason == "stop")
                    history[i] += [{"role": "assistant", "content": answer}, *feedback]
                    ids[i] += extra
                    masks[i] += [0] * len(extra)
                    logps[i] += [0.0] * len(extra)
                    versions[i] += [-1] * len(extra)
                    still.append(i)
            active = still
            if not active:
                break
        return [
            Trajectory(
                ids[i],
                masks[i],
                logps[i],
                rewards[i],
                versions[i],
                turns[i],
                {"correct": rewards[i] > 0, "first_try": first_try[i]},
            )
            for i in range(n)
        ]

    async def _generate(self, qid: str, prompts: list[list[int]], obs_queue, act_queue):
        """One sample for each prompt: a single n-sample request when they are all the same
        prompt (the first turn of a group), else one request per prompt, all in flight at
        once and told apart by their qid (`qid@i`)."""
        if all(p == prompts[0] for p in prompts):
            await obs_queue.put((qid, prompts[0], GenerationConfig(n=len(prompts))))
            act: BundledGenerationOutputs = await act_queue.get()
            return act.seqs
        for i, p in enumerate(prompts):
            await obs_queue.put((f"{qid}@{i}", p, GenerationConfig(n=1)))
        by_qid = {}
        for _ in prompts:
            act = await act_queue.get()
            by_qid[act.qid] = act.seqs[0]
        return [by_qid[f"{qid}@{i}"] for i in range(len(prompts))]


register_agent("math-multi-turn", MathMultiTurnAgent)
register_env("math-single-step", MathSingleStepEnv)
