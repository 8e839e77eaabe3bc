"""REST order-book fetches for quiet-token confirmation, under one process-wide rate budget.

Published limits are far above what we use (``/books`` 500 requests / 10 s); we stay at a few
requests a second and back off on 429/5xx. Failures are reported, never retried in a loop.
"""

from __future__ import annotations

import http.client
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from sidecar.shell.inbox import Post, RestAnswer

log = logging.getLogger("sidecar.shell.rest")

TIMEOUT_S = 5.0
THROTTLED_PAUSE_S = 10.0  # after a 429 or 5xx: let the server's budget refill


class RestClient:
    def __init__(self, base_url: str, max_rps: float, post: Post) -> None:
        if not max_rps > 0:
            raise ValueError(f"max_rps must be positive, got {max_rps!r}")
        self._url = base_url.rstrip("/") + "/books"
        self._interval = 1.0 / max_rps
        self._post = post
        self._queue: queue.SimpleQueue[tuple[int, list[str]] | None] = queue.SimpleQueue()
        self._next_at = 0.0
        self._thread = threading.Thread(target=self._run, name="rest", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    def fetch(self, request_id: int, tokens: list[str]) -> None:
        self._queue.put((request_id, tokens))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request_id, tokens = item
            wait = self._next_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._next_at = time.monotonic() + self._interval
            self._post(RestAnswer(request_id, self._books(tokens)))

    def _books(self, tokens: list[str]) -> list[Any] | None:
        body = orjson.dumps([{"token_id": t} for t in tokens])
        req = urllib.request.Request(
            self._url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                data = orjson.loads(resp.read())
            if isinstance(data, list):
                return data
            self._failed(f"answer is a {type(data).__name__}, not a list")
        except urllib.error.HTTPError as exc:
            self._failed(f"HTTP {exc.code}")
            if exc.code == 429 or exc.code >= 500:
                self._next_at = time.monotonic() + THROTTLED_PAUSE_S
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException covers a cut or garbled answer (IncompleteRead, BadStatusLine): it
            # must cost one request, never the REST thread (quiet tokens would stop confirming).
            self._failed(f"{type(exc).__name__}: {exc}")
        return None

    def _failed(self, what: str) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 20 == 0:
            log.warning("REST /books failed (%d so far): %s", self.errors, what)
