"""`rayrl serve`: a policy behind Ray Serve, OpenAI-compatible, plus seed 003's `POST /solve`.

    .venv/bin/rayrl serve runs/<name> [--port 8000] [--token SECRET]

`deploy(target)` does the same from Python and returns the base URL. One replica owns
one vLLM engine (the rollout role's `RolloutWorker`, so serving and training generate
with the same code) and answers:

- `POST /v1/chat/completions`: OpenAI chat completions, streamed (`stream: true`, server-
  sent events) or whole. `tools` in the OpenAI schema are described to the model in the
  Hermes `<tool_call>` format when its chat template takes none, and the calls it writes
  come back as OpenAI `tool_calls` (`rayrl.agent.capture`, the same code the training-time
  endpoint uses). `logprobs: true` returns each token's id and log-prob.
- `GET /v1/models`, `GET /health`.
- `POST /solve` with `{"problem": "..."}` (or `?problem=...`): `{"solution": "..."}`,
  greedy.

It binds to 127.0.0.1 unless told otherwise. With a token, every request but `/health`
needs `Authorization: Bearer <token>`. Bodies over `max_request_bytes` get 413, and
`max_tokens` is capped. Malformed JSON or fields, unknown model names and prompts that
fill the context get a 4xx with a message; the replica stays up.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from rayrl.agent.capture import TokenCapture
from rayrl.agent.chat_tokens import ChatTokens, load_tokenizer
from rayrl.agent.openai_format import (
    RequestError,
    chat_completion,
    chunk,
    error_body,
    finish_reason,
    read_chat_request,
    token_logprobs,
    tool_call_deltas,
    usage,
)
from rayrl.config import ConfigError, InferenceConfig, _describe, _Section

TOOL_MARK = "<tool_call>"  # where a Hermes-format tool call starts


class ServeConfig(_Section):
    """How a policy is served."""

    host: str = "127.0.0.1"
    """Address the HTTP proxy binds (0.0.0.0 exposes it beyond this node)."""
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = None
    """Bearer token every request must carry (None: no authentication, loopback only
    is then the only protection)."""
    model_name: str = "policy"
    """The name requests use in `model` (the served folder's path and name also work)."""
    max_tokens: int = Field(1024, ge=1)
    """Cap on a reply's tokens, whatever a request asks."""
    max_request_bytes: int = Field(1 << 20, ge=1024)
    """Largest request body accepted (413 beyond)."""
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """Sampling temperature of requests that give none (OpenAI's default)."""
    solve_system_prompt: str | None = None
    """System message of `POST /solve` conversations (None: the problem alone)."""
    max_ongoing_requests: int = Field(256, ge=1)
    """Requests a replica works on at once (the engine batches them)."""
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0.0)
    """Logical CPUs a replica asks Ray for (on CPU machines)."""

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(f"serve: {_describe(err)}") from None


def cut_at(text: str, marks: list[str]) -> str:
    """`text` up to the first of `marks` found in it."""
    return text[: min([i for i in (text.find(m) for m in marks) if i >= 0] or [len(text)])]


class TextStream:
    """The decoded text of a reply growing token by token, released as deltas.

    Text that may still change is held back: an incomplete UTF-8 character, a stop
    string (and what follows it), and, when the request has tools, everything from a
    `<tool_call>` on, since that text comes back as `tool_calls` instead; a partial mark
    at the end waits for the next tokens.
    """

    def __init__(self, tokenizer: Any, marks: list[str]):
        self.tokenizer = tokenizer
        self.marks = marks
        self.ids: list[int] = []
        self.sent = ""

    def add(self, ids: list[int]) -> str:
        self.ids += ids
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        text = cut_at(text, self.marks)
        partial = [k for m in self.marks for k in range(len(m) - 1, 0, -1) if text.endswith(m[:k])]
        text = text[: len(text) - max(partial, default=0)]
        if not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def rest(self, content: str | None) -> str:
        """What the final message's content adds to the text already sent."""
        content = content or ""
        return content[len(self.sent) :] if content.startswith(self.sent) else ""


def _json(body: dict, status: int = 200):
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status)


class PolicyServer:
    """Plain class; `rayrl.placement.serve_deployment` makes it a Ray Serve deployment.

    Args:
        model_path: local Hugging Face folder.
        inference: engine settings (`max_model_len`, `kv_cache_gb`, `dtype`, ...).
        settings: serving settings.
    """

    def __init__(self, model_path: str, inference: InferenceConfig, settings: ServeConfig):
        from rayrl.actors.rollout import RolloutWorker

        self.model_path = model_path
        self.inference = inference
        self.settings = settings
        self.worker = RolloutWorker(model_path, inference)
        self.chat = ChatTokens(load_tokenizer(model_path))
        self.names = {settings.model_name, model_path, Path(model_path).name}

    async def start(self) -> None:
        await self.worker.start()

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead engine restarts the replica."""
        engine = self.worker.engine
        if engine is None or getattr(engine, "errored", False):
            raise RuntimeError("the vLLM engine is not running")

    async def __call__(self, request):
        try:
            return await self._route(request)
        except RequestError as err:
            return _json(err.body(), err.status)

    # ---- routing -----------------------------------------------------------------
    async def _route(self, request):
        path, method = request.url.path.rstrip("/") or "/", request.method
        if path == "/health":
            return _json({"status": "ok"})
        self._authorize(request)
        routes = {
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/models": ("GET", self._models),
            "/solve": ("POST", self._solve),
        }
        if path not in routes:
            raise RequestError(
                404, f"no route {path}; see /v1/chat/completions, /v1/models, /solve", "not_found"
            )
        wanted, handler = routes[path]
        if method != wanted:
            raise RequestError(405, f"{path} takes {wanted}, not {method}")
        return await handler(request)

    def _authorize(self, request) -> None:
        token = self.settings.token
        if token and not secrets.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
            raise RequestError(401, "missing or wrong bearer token", "authentication_error")

    async def _body(self, request, optional: bool = False) -> Any:
        cap = self.settings.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise RequestError(413, f"request body larger than {cap} bytes")
        raw = b""
        async for part in request.stream():
            raw += part
            if len(raw) > cap:
                raise RequestError(413, f"request body larger than {cap} bytes")
        if optional and not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(400, f"the request body is not JSON: {err}") from None

    async def _models(self, request):
        return _json(
            {
                "object": "list",
                "data": [{"id": self.settings.model_name, "object": "model", "owned_by": "rayrl"}],
            }
        )

    # ---- generation --------------------------------------------------------------
    def _prompt(self, messages: Any, tools: list[dict] | None) -> tuple[TokenCapture, list[int]]:
        capture = TokenCapture(self.chat)
        try:
            ids = capture.prompt(messages, tools)
        except ValueError as err:
            raise RequestError(400, f"messages: {err}") from None
        return capture, ids

    def _budget(self, n_prompt: int, asked: int | None) -> int:
        room = self.inference.max_model_len - n_prompt
        if room < 1:
            raise RequestError(
                400, f"the prompt has {n_prompt} tokens; the context holds {self.inference.max_model_len}"
            )
        return min(asked or self.settings.max_tokens, self.settings.max_tokens, room)

    async def _generate(self, prompt_ids: list[int], budget: int, temperature, top_p, seed, stop=None):
        try:
            return await self.worker.generate(prompt_ids, budget, temperature, top_p, seed, stop)
        except Exception as err:  # the engine failed; check_health has the replica replaced
            raise RequestError(
                503, f"the engine failed: {type(err).__name__}: {err}", "server_error"
            ) from err

    async def _chat(self, request):
        req = read_chat_request(await self._body(request))
        if req.model is not None and req.model not in self.names:
            raise RequestError(
                404,
                f"model {req.model!r} is not served here (served: {self.settings.model_name!r})",
                "not_found",
            )
        capture, prompt_ids = self._prompt(req.messages, req.tools)
        budget = self._budget(len(prompt_ids), req.max_tokens)
        temperature = self.settings.temperature if req.temperature is None else req.temperature
        model = req.model or self.settings.model_name
        if req.stream:
            from starlette.responses import StreamingResponse

            events = self._events(req, capture, prompt_ids, budget, temperature, model)
            return StreamingResponse(events, media_type="text/event-stream")
        gen = await self._generate(prompt_ids, budget, temperature, req.top_p, req.seed)
        message = capture.record(
            gen.token_ids, gen.logprobs, gen.weight_version, gen.finish_reason, req.tool_names
        )
        logprobs = token_logprobs(gen.token_ids, gen.logprobs) if req.logprobs else None
        return _json(
            chat_completion(
                message,
                finish_reason(message, gen.finish_reason),
                model,
                len(prompt_ids),
                len(gen.token_ids),
                logprobs,
            )
        )

    async def _events(self, req, capture: TokenCapture, prompt_ids, budget, temperature, model):
        """Server-sent events of one streamed reply."""
        import uuid

        cid = "chatcmpl-" + uuid.uuid4().hex

        def event(body: dict) -> str:
            return f"data: {json.dumps(body)}\n\n"

        yield event(chunk(cid, model, {"role": "assistant", "content": ""}))
        text = TextStream(self.chat.tokenizer, req.stop + ([TOOL_MARK] if req.tools else []))
        ids: list[int] = []
        logprobs: list[float] = []
        engine_finish = None
        try:
            parts = self.worker.stream(prompt_ids, budget, temperature, req.top_p, req.seed, req.stop)
            async for part in parts:
                ids += part.token_ids
                logprobs += part.logprobs
                engine_finish = part.finish_reason
                delta = text.add(part.token_ids)
                if delta or (req.logprobs and part.token_ids):
                    body: dict[str, Any] = {"content": delta}
                    extra = (
                        {"logprobs": token_logprobs(part.token_ids, part.logprobs)} if req.logprobs else {}
                    )
                    yield event(chunk(cid, model, body, **extra))
        except Exception as err:  # headers are sent: the error goes in the stream
            yield event(error_body(503, f"the engine failed: {type(err).__name__}: {err}", "server_error"))
            yield "data: [DONE]\n\n"
            return
        message = capture.record(ids, logprobs, 0, engine_finish or "stop", req.tool_names)
        rest = text.rest(cut_at(message.get("content") or "", req.stop))
        if rest:
            yield event(chunk(cid, model, {"content": rest}))
        if "tool_calls" in message:
            yield event(chunk(cid, model, {"tool_calls": tool_call_deltas(message["tool_calls"])}))
        yield event(chunk(cid, model, {}, finish_reason(message, engine_finish)))
        if req.include_usage:
            yield event(chunk(cid, model, None, usage=usage(len(prompt_ids), len(ids))))
        yield "data: [DONE]\n\n"

    async def _solve(self, request):
        body = await self._body(request, optional=True)
        problem = body.get("problem") if isinstance(body, dict) else None
        if problem is None:
            problem = request.query_params.get("problem")
        if not isinstance(problem, str) or not problem.strip():
            raise RequestError(400, 'give the problem as {"problem": "..."} or ?problem=...')
        messages = [{"role": "user", "content": problem}]
        if self.settings.solve_system_prompt:
            messages.insert(0, {"role": "system", "content": self.settings.solve_system_prompt})
        capture, prompt_ids = self._prompt(messages, None)
        gen = await self._generate(prompt_ids, self._budget(len(prompt_ids), None), 0.0, 1.0, None)
        message = capture.record(gen.token_ids, gen.logprobs, gen.weight_version, gen.finish_reason)
        return _json({"solution": message["content"].strip(), "completion_tokens": len(gen.token_ids)})


def served_policy(target: str) -> tuple[str, InferenceConfig]:
    """The model folder a target names (a run directory's final policy, a folder, or a
    model name) and the engine settings (the run's, or the defaults)."""
    from rayrl.config import ConfigStore
    from rayrl.evaluation import policy_of
    from rayrl.model_store import resolve_model

    model, run_dir = policy_of(target)
    inference = ConfigStore.from_yaml(run_dir / "config.yaml").inference if run_dir else InferenceConfig()
    return resolve_model(model), inference


def deploy(
    target: str,
    settings: ServeConfig | None = None,
    inference: InferenceConfig | None = None,
    name: str = "rayrl",
) -> str:
    """Serve `target` (a run directory, a model folder or a model name) with Ray Serve on
    the Ray this process is attached to (a local one is started if none is). Returns the
    base URL (`<url>/v1` for the `openai` client); the deployment lives until
    `shutdown()` or the end of Ray.
    """
    import ray
    from ray import serve

    from rayrl.config import ConfigStore
    from rayrl.placement import serve_deployment
    from rayrl.trainer import ACTOR_ENV, init_ray

    settings = settings or ServeConfig()
    model_path, run_inference = served_policy(target)
    inference = inference or run_inference
    if not ray.is_initialized():
        init_ray(ConfigStore.from_dict({}), 1)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    app = serve_deployment(PolicyServer, settings, ACTOR_ENV).bind(model_path, inference, settings)
    serve.run(app, name=name, route_prefix="/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    return f"http://{host}:{settings.port}"


def shutdown() -> None:
    """Stop Ray Serve (its deployments and HTTP proxy)."""
    from ray import serve

    serve.shutdown()


__all__ = ["PolicyServer", "ServeConfig", "TextStream", "deploy", "served_policy", "shutdown"]
