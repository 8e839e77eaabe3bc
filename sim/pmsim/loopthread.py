"""The simulator's event loop in a daemon thread, and how other threads run code on it.

All simulator state lives on this one loop. Callers on other threads hand it a function (or a
coroutine) and wait for the result; before the loop runs, after it stopped, or on the loop
itself, the function simply runs inline, so scripting works on a simulator that is not started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CALL_TIMEOUT_S = 30.0


class LoopThread:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = False  # set by the owner once its servers listen, cleared on stop
        self._thread: threading.Thread | None = None
        self._tid: int | None = None

    def start(self) -> asyncio.AbstractEventLoop:
        """Start the thread and return its loop once it runs."""
        if self.loop is not None:
            raise RuntimeError("Simulator.start() called twice")
        loop = asyncio.new_event_loop()
        self.loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._tid = threading.get_ident()
            loop.call_soon(ready.set)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-loop", daemon=True)
        self._thread.start()
        ready.wait(10)
        return loop

    def on_loop(self) -> bool:
        """Is the caller the loop thread itself?"""
        return self.loop is not None and threading.get_ident() == self._tid

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the loop and wait for it; run inline before start, after stop or on the loop."""
        loop = self.loop
        if loop is None or not self.running or self.on_loop():
            return fn(*args)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the calling thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(CALL_TIMEOUT_S)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run a coroutine on the loop and wait for it (its own short-lived loop if not running)."""
        if self.loop is None or not self.running:
            return asyncio.run(coro)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run_on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run a coroutine on the started loop whether or not the owner marked it running."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop (its tasks are cancelled) and join the thread."""
        self.running = False
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
