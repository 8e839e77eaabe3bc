"""The REST worker: book fetches for quiet-token confirmation and market-state polls, one thread,
one HTTP client (``sidecar.shell.http``), one process-wide rate budget (SIDECAR_REST_MAX_RPS).

Published limits are far above what we use (``/books`` 500 requests / 10 s); we stay at a few
requests a second and obey the server's ``Retry-After``. Failures are reported, never retried in a
loop: the engine asks again on its own schedule. Book confirmations go before market polls (a quiet
token waits on its confirmation; a market poll can wait), also between the GETs of one poll.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from sidecar.shell.http import Answer, Budget, HttpClient, RequestFailed
from sidecar.shell.inbox import MarketAnswer, Post, RestAnswer

log = logging.getLogger("sidecar.shell.rest")


@dataclass(slots=True)
class _Books:
    request_id: int
    tokens: list[str]


@dataclass(slots=True)
class _Markets:
    """A market poll under way: ``done`` holds the answers so far (one GET per condition id)."""

    request_id: int
    markets: list[str]
    done: dict[str, Any | None]


class RestClient:
    def __init__(self, base_url: str, max_rps: float, post: Post) -> None:
        self._http = HttpClient(base_url, Budget(max_rps))
        self._post = post
        self._books: deque[_Books] = deque()
        self._markets: deque[_Markets] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="rest", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def fetch(self, request_id: int, tokens: list[str]) -> None:
        """``POST /books`` for these tokens; answered with a ``RestAnswer``."""
        with self._cv:
            self._books.append(_Books(request_id, tokens))
            self._cv.notify()

    def fetch_markets(self, request_id: int, markets: list[str]) -> None:
        """``GET /markets/{condition_id}`` for each; answered with one ``MarketAnswer``."""
        with self._cv:
            self._markets.append(_Markets(request_id, list(markets), {}))
            self._cv.notify()

    def _next(self) -> _Books | _Markets | None:
        with self._cv:
            while not (self._stopping or self._books or self._markets):
                self._cv.wait()
            if self._stopping:
                return None
            return self._books.popleft() if self._books else self._markets[0]

    def _run(self) -> None:
        try:
            while (job := self._next()) is not None:
                if isinstance(job, _Books):
                    self._post(RestAnswer(job.request_id, self._fetch_books(job.tokens)))
                else:
                    self._step_markets(job)
        finally:
            self._http.close()

    def _step_markets(self, job: _Markets) -> None:
        """One GET of the poll at the head of the queue; the answer is posted after the last one
        (or at the first failure: then the whole answer is None)."""
        market = job.markets[len(job.done)]
        try:
            job.done[market] = self._fetch_market(market)
            finished = len(job.done) == len(job.markets)
            answer: dict[str, Any | None] | None = job.done
        except RequestFailed as exc:
            self._failed(f"GET /markets/{market}", str(exc))
            finished, answer = True, None
        if finished:
            with self._cv:
                self._markets.popleft()
            self._post(MarketAnswer(job.request_id, answer))

    def _fetch_market(self, market: str) -> Any | None:
        """The market's JSON object, None when the exchange does not know it (404)."""
        answer = self._http.request("GET", f"/markets/{market}")
        if answer.status == 404:
            return None
        return _json(answer, dict)

    def _fetch_books(self, tokens: list[str]) -> list[Any] | None:
        body = orjson.dumps([{"token_id": t} for t in tokens])
        try:
            answer = self._http.request("POST", "/books", body)
            books: list[Any] = _json(answer, list)
            return books
        except RequestFailed as exc:
            self._failed("POST /books", str(exc))
            return None

    def _failed(self, request: str, what: str) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 20 == 0:
            log.warning("REST %s failed (%d so far): %s", request, self.errors, what)


def _json(answer: Answer, kind: type) -> Any:
    """A 200 answer's JSON body, which must be a ``kind`` (list or dict); else RequestFailed."""
    if answer.status != 200:
        raise RequestFailed(f"HTTP {answer.status}")
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        raise RequestFailed(f"JSONDecodeError: {exc}") from None
    if not isinstance(data, kind):
        raise RequestFailed(
            f"answer is a {type(data).__name__}, not {'a list' if kind is list else 'an object'}"
        )
    return data
