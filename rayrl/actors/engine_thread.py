"""vLLM's engine inside the rollout actor's own process, stepped by a thread of its own.

vLLM's AsyncLLM always runs its engine core in a second process. From a Ray actor that
process is spawned (vLLM forbids forking there) and imports vLLM, torch and transformers
again: on a 2-core machine about 13 s of CPU per engine start, and a second resident copy
of those libraries. `EngineThread` builds vLLM's synchronous `LLMEngine` with its core in
process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) and offers the few AsyncLLM calls the rollout
role makes (`generate`, `collective_rpc`, `reset_prefix_cache`, `shutdown`). Concurrent
requests are batched continuously by vLLM's scheduler, as they were before.

All engine work (building it, stepping it, adding and aborting requests, the weight-sync
RPCs) happens on the one engine thread: vLLM binds the OpenMP threads of the thread that
initialises its CPU worker, and the engine is not thread-safe. Callers on the actor's event
loop hand it work through a queue and receive outputs through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

logger = logging.getLogger(__name__)


class EngineThread:
    """Use `await EngineThread.start(engine_args, threads)`; then as AsyncLLM's subset.

    Args:
        engine_args: vLLM `EngineArgs` (or `AsyncEngineArgs`).
        threads: torch threads for the model's forward pass (None: leave as is).
    """

    def __init__(self, engine_args: Any, threads: int | None = None):
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()  # (fn(engine), future or None)
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._dead: BaseException | None = None
        self._ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(engine_args, threads), name="rayrl-vllm-engine", daemon=True
        )

    @classmethod
    async def start(cls, engine_args: Any, threads: int | None = None) -> EngineThread:
        """Build the engine on its thread; returns once it can serve (raises what the
        build raised)."""
        engine = cls(engine_args, threads)
        engine._thread.start()
        await asyncio.wrap_future(engine._ready)
        return engine

    @property
    def errored(self) -> bool:
        """Whether the engine failed (every later call raises `EngineDeadError`)."""
        return self._dead is not None

    # ---- the calls the rollout role makes ------------------------------------------
    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        """vLLM `RequestOutput`s of one request as it runs (the last is finished); closing
        the iterator early aborts the request."""
        self._check_alive()
        outputs: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), outputs)
        self._submit(lambda engine: self._add(engine, request_id, prompt, params))
        finished = False
        try:
            while True:
                out = await outputs.get()
                if isinstance(out, BaseException):
                    finished = True
                    raise out
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished and not self.errored:
                self._submit(lambda engine: engine.abort_request([request_id]))

    async def collective_rpc(self, method: str, args: tuple = (), kwargs: dict | None = None) -> list:
        """Call `method` on the engine's workers (the weight-sync extension's methods),
        between two engine steps."""
        return await self._call(lambda engine: engine.collective_rpc(method, args=args, kwargs=kwargs))

    async def reset_prefix_cache(self) -> bool:
        return await self._call(lambda engine: engine.reset_prefix_cache())

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Abort what runs, stop the thread and free the engine."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ---- the engine thread -----------------------------------------------------------
    def _main(self, engine_args: Any, threads: int | None) -> None:
        try:
            if threads:
                import torch

                torch.set_num_threads(threads)  # this thread's OpenMP pool runs the model
            from vllm.v1.engine.llm_engine import LLMEngine

            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # "1" would spawn the core anyway
            engine = LLMEngine.from_engine_args(engine_args)
        except BaseException as err:  # noqa: BLE001 - handed to the caller of `start`
            self._dead = err
            self._ready.set_exception(err)
            return
        self._ready.set_result(None)
        try:
            while not self._stopping:
                self._run_inbox(engine)
                if self._stopping:
                    break
                if engine.has_unfinished_requests():
                    for out in engine.step():
                        self._deliver(out.request_id, out)
                else:
                    self._wake.wait()
                    self._wake.clear()
        except BaseException as err:  # noqa: BLE001 - the engine is gone: tell every caller
            from vllm.v1.engine.exceptions import EngineDeadError

            logger.exception("the vLLM engine failed")
            self._dead = EngineDeadError()
            self._dead.__cause__ = err
        finally:
            self._stopping = True
            gone = self._dead or RuntimeError("the vLLM engine was shut down")
            for request_id in list(self._streams):
                self._deliver(request_id, gone)
            for _, future in self._drain():
                if future is not None and not future.done():
                    future.set_exception(gone)
            try:
                engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort on the way out
                logger.warning("vLLM engine shutdown failed", exc_info=True)

    def _add(self, engine: Any, request_id: str, prompt: Any, params: Any) -> None:
        try:
            engine.add_request(request_id, prompt, params)
        except Exception as err:  # noqa: BLE001 - a bad request fails only its caller
            self._deliver(request_id, err)

    def _drain(self):
        """The (fn, future) items waiting in the inbox, taken out one by one."""
        while True:
            try:
                yield self._inbox.get_nowait()
            except queue.Empty:
                return

    def _run_inbox(self, engine: Any) -> None:
        for fn, future in self._drain():
            try:
                result = fn(engine)
            except Exception as err:  # noqa: BLE001 - the caller's call failed, not the engine
                if future is None:
                    raise
                future.set_exception(err)
            else:
                if future is not None:
                    future.set_result(result)

    def _deliver(self, request_id: str, item: Any) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            loop, outputs = stream
            try:
                loop.call_soon_threadsafe(outputs.put_nowait, item)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                self._streams.pop(request_id, None)

    # ---- handing work to the thread -------------------------------------------------
    def _check_alive(self) -> None:
        if self._dead is not None:
            raise self._dead
        if self._stopping:
            raise RuntimeError("the vLLM engine was shut down")

    def _submit(self, fn: Callable[[Any], Any], future: concurrent.futures.Future | None = None) -> None:
        self._inbox.put((fn, future))
        self._wake.set()

    async def _call(self, fn: Callable[[Any], Any]) -> Any:
        self._check_alive()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._submit(fn, future)
        return await asyncio.wrap_future(future)
