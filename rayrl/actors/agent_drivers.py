"""Agents of the user's own, driven inside the agent loop actor.

- `QueueAgentDriver`: a queue-driven agent (`rayrl.agent.async_agent.Agent`, seed 004's
  shape) plays one task per call of `collect_trajectory`; the driver serves its
  observation queue with the rollout engines (n samples of a request at once, spread
  over the engines) and puts the answers on its action queue.
- `FunctionAgentDriver`: an `async def run(client, task) -> float` written against the
  `openai` package plays each episode through `AgentEndpoint`, an OpenAI-compatible
  `/v1/chat/completions` on loopback in front of the engines. Every request's exact
  prompt and completion ids are captured (`rayrl.agent.capture.TokenCapture`), and the
  episode is trained on with the reward the function returns.

Either way an engine that dies marks the episode (or the group) lost, and the agent loop
re-runs it on the replacement engine.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import secrets
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rayrl.agent.async_agent import (
    AgentPrompt,
    BundledGenerationOutputs,
    GenerationConfig,
    GenerationOutput,
    Trajectory,
    agent_class,
    env_class,
    load_object,
)
from rayrl.agent.capture import HistoryRewritten, TokenCapture
from rayrl.agent.openai_format import (
    RequestError,
    chat_completion,
    error_body,
    finish_reason,
    read_chat_request,
    token_logprobs,
)
from rayrl.config import AgentRunConfig, ConfigError

if TYPE_CHECKING:
    from rayrl.actors.agent_loop import Episode, EpisodeRunner


@dataclass
class AgentPlan:
    """The `agent` section resolved on the driver (where the user registered the agent):
    what the agent loop receives."""

    config: AgentRunConfig
    agent: Any = None  # an Agent class, or the episode function
    env: Any = None  # an EnvironmentService class (queue-driven agents)

    @property
    def kind(self) -> str:
        return "queue" if self.config.name else "function"


def plan_agent(config: AgentRunConfig, agent: Any = None) -> AgentPlan | None:
    """Resolve the run's agent: `agent` given in Python (an `Agent` subclass or an async
    function), else `agent.name` / `agent.function`; None when the run uses none.

    Raises:
        ConfigError: the name or function cannot be found, or is not what it should be.
    """
    import rayrl.agents.math_multi_turn  # noqa: F401 - registers the built-in agent
    from rayrl.agent.async_agent import Agent

    try:
        if agent is None and config.name:
            agent = agent_class(config.name)
        elif agent is None and config.function:
            agent = load_object(config.function)
        if agent is None:
            return None
        if isinstance(agent, type) and issubclass(agent, Agent):
            return AgentPlan(
                config.model_copy(update={"name": agent.__qualname__}), agent, env_class(config.env)
            )
        if inspect.iscoroutinefunction(agent):
            return AgentPlan(config.model_copy(update={"name": None}), agent)
        raise ConfigError(
            f"agent {getattr(agent, '__qualname__', agent)!r} is neither an Agent subclass nor an "
            "async function `async def run(client, task) -> float`"
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"agent: {err}") from None


def _episode(episode_cls, t: Trajectory, group: int, version: int) -> Episode:
    versions = t.versions if t.versions is not None else [version if m else -1 for m in t.loss_mask]
    return episode_cls(
        list(t.input_ids),
        list(t.loss_mask),
        list(t.logprobs),
        float(t.reward),
        group,
        t.num_turns,
        dict(t.info),
        versions=list(versions),
    )


class QueueAgentDriver:
    """Runs a queue-driven agent, one group (task) per `run_group` call.

    Args:
        runner: the agent loop (engines, tokenizer, environments, inference settings).
        plan: the resolved agent (its class and environment service class).
        group_size: `training.group_size` (given to agents that take `group_size`).
    """

    per_group = True

    def __init__(self, runner: EpisodeRunner, plan: AgentPlan, group_size: int):
        self.runner = runner
        kwargs = dict(plan.config.args)
        accepted = inspect.signature(plan.agent).parameters
        for key, value in (("tokenizer", runner.tokenizer), ("group_size", group_size)):
            if key in accepted and key not in kwargs:
                kwargs[key] = value
        self.agent = plan.agent(**kwargs)
        self.calls_per_group = 1 if "group_size" in accepted else group_size
        self.timeout_s = plan.config.episode_timeout_s
        self.env = plan.env(**plan.config.env_args)
        self.serial = 0

    async def run_group(self, task: Any, group: int, engine: int, temperature, seed) -> list[Episode]:
        """Play `task` with the agent; the episodes it returns, or one lost/failed episode.

        An agent whose constructor takes `group_size` plays the whole group in one call;
        any other agent is called once per sample (qids `<qid>@<k>`), all at once."""
        from rayrl.actors.agent_loop import Episode, engine_died

        self.serial += 1
        qid = f"{self.serial}-{group}"
        try:
            prompt = await self.runner.agent_prompt(qid, task)
        except Exception as err:  # noqa: BLE001 - an environment bug ends its own group only
            return [Episode.failed(group, f"environment failed: {err}")]
        self.env.id2info[qid] = {"task": task, "answer": self.runner.reference_answer(task)}
        counter = {"requests": 0, "version": -1}
        calls = [prompt]
        if self.calls_per_group > 1:
            calls = [replace(prompt, qid=f"{qid}@{k}") for k in range(self.calls_per_group)]
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(self._drive(p, engine, temperature, seed, counter) for p in calls)),
                self.timeout_s,
            )
        except asyncio.TimeoutError:
            message = f"agent ran past agent.episode_timeout_s={self.timeout_s:g} on this group"
            return [Episode.failed(group, message)]
        except Exception as err:  # noqa: BLE001 - the agent's or the engine's failure
            if engine_died(err):
                return [
                    Episode.failed(
                        group, repr(err)[:300], counter["requests"], getattr(err, "engine", engine)
                    )
                ]
            return [Episode.failed(group, f"agent failed: {type(err).__name__}: {err}")]
        finally:
            self.env.id2info.pop(qid, None)
        trajectories = [t for result in results for t in (result if isinstance(result, list) else [result])]
        if not all(isinstance(t, Trajectory) for t in trajectories):
            return [Episode.failed(group, "agent must return a list of Trajectory")]
        return [_episode(Episode, t, group, counter["version"]) for t in trajectories]

    async def _drive(self, prompt: AgentPrompt, engine: int, temperature, seed, counter: dict):
        """One `collect_trajectory` call, its observation queue served by the engines."""
        obs_queue: asyncio.Queue = asyncio.Queue()
        act_queue: asyncio.Queue = asyncio.Queue()
        collecting = asyncio.ensure_future(
            self.agent.collect_trajectory(prompt, self.env, obs_queue, act_queue)
        )
        serving: set[asyncio.Future] = set()
        try:
            while not collecting.done():
                request = asyncio.ensure_future(obs_queue.get())
                done, _ = await asyncio.wait(
                    {collecting, request, *serving}, return_when=asyncio.FIRST_COMPLETED
                )
                for finished in done & serving:
                    serving.discard(finished)
                    finished.result()  # an engine failure surfaces here
                if request in done:
                    serve = self._serve(request.result(), act_queue, engine, temperature, seed, counter)
                    serving.add(asyncio.ensure_future(serve))
                else:
                    request.cancel()
            return collecting.result()
        finally:
            collecting.cancel()
            for future in serving:
                future.cancel()

    async def _serve(self, request, act_queue, engine: int, temperature, seed, counter: dict) -> None:
        qid, token_ids, gconfig = request
        gconfig = gconfig or GenerationConfig()
        budget = self.runner.turn_budget(len(token_ids), gconfig.max_new_tokens)
        n_engines = len(self.runner.engines)
        base = counter["requests"]
        counter["requests"] += gconfig.n
        if budget < 1:  # no room left: an empty answer, as a finished-by-length one
            seqs = [GenerationOutput([], [], "length", -1) for _ in range(gconfig.n)]
        else:
            temp = 0.0 if gconfig.greedy else temperature

            async def one(k: int) -> GenerationOutput:
                index = (engine + base + k) % n_engines
                sample_seed = None if seed is None else (seed + base + k) % 2**31
                try:
                    gen = await self.runner.engines[index].generate.remote(
                        list(token_ids), budget, temp, seed=sample_seed
                    )
                except Exception as err:
                    err.engine = index  # which engine to replace
                    raise
                return GenerationOutput(
                    gen.token_ids, gen.logprobs, gen.finish_reason or "stop", gen.weight_version
                )

            seqs = list(await asyncio.gather(*(one(k) for k in range(gconfig.n))))
            counter["version"] = max([counter["version"], *(q.weight_version for q in seqs)])
        await act_queue.put(BundledGenerationOutputs(qid, list(token_ids), seqs))


@dataclass
class _OpenEpisode:
    capture: TokenCapture
    engine: int
    temperature: float | None
    seed: int | None
    lost: BaseException | None = None
    refused: str | None = None
    truncated: bool = False


class AgentEndpoint:
    """OpenAI-compatible chat completions in front of the engines, for the episodes in play.

    Each episode gets its own base URL (`/episodes/<id>/v1`); every request needs the
    run's bearer token. Sampling follows the run (`inference.temperature`, `top_p`), since
    the learner's log-probs assume it: a request's `temperature` is ignored. `max_tokens`
    is capped by `inference.max_tokens` and the context left.

    Args:
        runner: the agent loop (engines, tokenizer, inference settings).
        host: address to bind (127.0.0.1 keeps it on the node).
        port: port to bind (0: any free one).
        max_request_bytes: largest request body accepted.
    """

    def __init__(self, runner: EpisodeRunner, host: str, port: int, max_request_bytes: int = 4 << 20):
        self.runner = runner
        self.host, self.port, self._bind_port = host, port, port
        self.token = secrets.token_urlsafe(24)
        self.max_request_bytes = max_request_bytes
        self.episodes: dict[str, _OpenEpisode] = {}
        self._site = None
        self._loop = None

    async def start(self) -> None:
        from aiohttp import web

        loop = asyncio.get_running_loop()
        if self._site is not None and self._loop is loop:
            return
        self._loop = loop  # a server runs on the loop that started it
        app = web.Application(client_max_size=self.max_request_bytes)
        app.router.add_post("/episodes/{eid}/v1/chat/completions", self._chat)
        app.router.add_get("/episodes/{eid}/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._bind_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._site = site

    def base_url(self, eid: str) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/episodes/{eid}/v1"

    def open(self, engine: int, temperature, seed, on_rewrite: str) -> tuple[str, _OpenEpisode]:
        eid = uuid.uuid4().hex
        self.episodes[eid] = _OpenEpisode(
            TokenCapture(self.runner.chat, on_rewrite), engine, temperature, seed
        )
        return eid, self.episodes[eid]

    def close(self, eid: str) -> None:
        self.episodes.pop(eid, None)

    # ---- HTTP ------------------------------------------------------------------------
    def _error(self, status: int, message: str, kind: str = "invalid_request_error"):
        from aiohttp import web

        return web.json_response(error_body(status, message, kind), status=status)

    def _check(self, request) -> _OpenEpisode | Any:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return self._error(401, "missing or wrong bearer token", "authentication_error")
        episode = self.episodes.get(request.match_info["eid"])
        if episode is None:
            return self._error(
                404, "no such episode in play (it ended, or the URL is wrong)", "not_found_error"
            )
        return episode

    async def _models(self, request):
        from aiohttp import web

        episode = self._check(request)
        if not isinstance(episode, _OpenEpisode):
            return episode
        return web.json_response({"object": "list", "data": [{"id": "policy", "object": "model"}]})

    async def _chat(self, request):
        from aiohttp import web

        from rayrl.actors.agent_loop import engine_died

        episode = self._check(request)
        if not isinstance(episode, _OpenEpisode):
            return episode
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "the request body is not JSON")
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, f"request larger than {self.max_request_bytes} bytes")
        try:
            req = read_chat_request(body)
        except RequestError as err:
            return self._error(err.status, str(err), err.kind)
        if req.stream:
            return self._error(400, "stream=true is not served during training; ask without streaming")
        if episode.refused:
            return self._error(409, episode.refused)
        capture = episode.capture
        try:
            prompt_ids = capture.prompt(req.messages, req.tools)
        except HistoryRewritten as err:
            episode.refused = str(err)
            return self._error(409, str(err))
        except ValueError as err:
            return self._error(400, f"messages: {err}")
        inf = self.runner.inference
        budget = self.runner.turn_budget(len(prompt_ids), req.max_tokens or inf.max_tokens)
        if budget < 1:
            episode.truncated = True
            return self._error(400, f"the conversation fills the context ({inf.max_model_len} tokens)")
        seed = None if episode.seed is None else (episode.seed + capture.requests) % 2**31
        try:
            gen = await self.runner.engines[episode.engine].generate.remote(
                prompt_ids, budget, episode.temperature, seed=seed
            )
        except Exception as err:
            if not engine_died(err):
                raise
            episode.lost = err
            return self._error(503, "the rollout engine serving this episode died", "server_error")
        message = capture.record(
            gen.token_ids, gen.logprobs, gen.weight_version, gen.finish_reason, req.tool_names
        )
        logprobs = token_logprobs(gen.token_ids, gen.logprobs) if req.logprobs else None
        return web.json_response(
            chat_completion(
                message,
                finish_reason(message, gen.finish_reason),
                req.model or "policy",
                len(prompt_ids),
                len(gen.token_ids),
                logprobs,
            )
        )


class FunctionAgentDriver:
    """Runs `async def run(client, task) -> float` per episode through `AgentEndpoint`.

    Args:
        runner: the agent loop.
        plan: the resolved agent (its function and the `agent` section).
    """

    per_group = False  # one episode per call, so a group's episodes spread over the engines

    def __init__(self, runner: EpisodeRunner, plan: AgentPlan):
        self.runner = runner
        self.fn = plan.agent
        self.config = plan.config
        self.endpoint = AgentEndpoint(runner, plan.config.host, plan.config.port)
        self.counts = {"requests": 0, "history_rewrites": 0, "refused": 0, "failed": 0}

    async def run_group(self, task: Any, group: int, engine: int, temperature, seed) -> list[Episode]:
        """One episode of `task`: its segments (one unless the agent rewrote history), or
        one failed or lost episode."""
        from openai import AsyncOpenAI

        from rayrl.actors.agent_loop import Episode

        await self.endpoint.start()
        eid, episode = self.endpoint.open(engine, temperature, seed, self.config.on_rewrite)
        client = AsyncOpenAI(
            base_url=self.endpoint.base_url(eid),
            api_key=self.endpoint.token,
            max_retries=0,
            timeout=self.config.episode_timeout_s,
        )
        error, reward = None, 0.0
        try:
            value = await asyncio.wait_for(self.fn(client, task), self.config.episode_timeout_s)
            reward = float(value)
            if not math.isfinite(reward):
                raise ValueError(f"reward {value!r} is not finite")
        except asyncio.TimeoutError:
            error = f"agent episode ran past agent.episode_timeout_s={self.config.episode_timeout_s:g}"
        except Exception as err:  # noqa: BLE001 - the user's agent fails its own episode only
            error = f"agent failed: {type(err).__name__}: {err}"[:500]
        finally:
            self.endpoint.close(eid)
            await client.close()
        capture = episode.capture
        self.counts["requests"] += capture.requests
        self.counts["history_rewrites"] += capture.rewrites
        if episode.lost is not None:
            return [Episode.failed(group, repr(episode.lost)[:300], capture.requests, engine)]
        if episode.refused:
            self.counts["refused"] += 1
            return [Episode.failed(group, episode.refused)]
        if error is not None:
            self.counts["failed"] += 1
            return [Episode.failed(group, error)]
        pieces = [
            Episode(
                s.ids,
                s.mask,
                s.logprobs,
                reward,
                group,
                s.turns,
                versions=s.versions,
                truncated=episode.truncated,
            )
            for s in capture.segments
            if any(s.mask)
        ]
        return pieces or [Episode.failed(group, "the agent made no request")]
