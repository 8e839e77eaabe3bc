"""One client socket's session with the market channel, sans I/O: the wire rules, once.

:class:`Session` is fed the text frames a client sends and answers each with a :class:`Reply`:
which tokens joined or left the socket's subscription set, the control text the server sends
back, whether the server closes the socket, and the rule breaks seen. It knows nothing of
sockets, asyncio or threads, so the simulator's server and the engine's unit-test harness apply
exactly the same rules (see ../shared/polymarket-market-channel.md):

- The first frame must be ``{"type": "market", "assets_ids": [...]}`` (type case-insensitive);
  anything else (a ``PING`` included) is closed with 1008 "invalid subscription payload".
- Later frames: text ``PING`` (answered ``PONG``) or ``{"operation": "subscribe"|"unsubscribe",
  "assets_ids": [...]}``. A second ``type`` frame, or a bad operation, is answered ``INVALID
  OPERATION``; a subscribe that adds nothing is answered ``NO NEW ASSETS``.
- More than 100 ids in one frame closes the socket with 1008 "too many assets" (strict mode).
- Ids that are not decimal strings of 1-100 digits, or repeat within a frame, are skipped.

Each rule break a well-behaved client never commits (all of the above, plus binary frames and
unsubscribing a token the socket does not hold) is reported as a violation, for tests to assert on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from .messages import INVALID_OPERATION, NO_NEW_ASSETS, PONG

MAX_IDS_PER_FRAME = 100
TOKEN_RE = re.compile(r"[0-9]{1,100}")


class Kind(Enum):
    """What a received frame turned out to be."""

    SUBSCRIPTION = "subscription"  # the first frame, accepted
    SUBSCRIBE = "subscribe"  # an operation frame adding tokens
    UNSUBSCRIBE = "unsubscribe"
    PING = "ping"
    REFUSED = "refused"  # answered INVALID OPERATION, or the socket is closed
    IGNORED = "ignored"  # not understood and not answered (or the session is already over)


@dataclass(frozen=True)
class CloseSocket:
    """The server closes the socket with this code and reason (nothing more is sent first)."""

    code: int
    reason: str


@dataclass(frozen=True)
class Reply:
    """The server's decision about one received frame."""

    kind: Kind
    added: tuple[str, ...] = ()  # tokens that joined the subscription set, in frame order
    removed: tuple[str, ...] = ()  # tokens that left it
    dump: bool = False  # send a book snapshot of each added token (initial_dump)
    answer: str | None = None  # control text to send back: PONG, INVALID OPERATION, NO NEW ASSETS
    close: CloseSocket | None = None
    violations: tuple[str, ...] = ()  # rule breaks, without the socket's name


INVALID_SUBSCRIPTION = CloseSocket(1008, "invalid subscription payload")
TOO_MANY_ASSETS = CloseSocket(1008, "too many assets")


def short(text: str, limit: int = 120) -> str:
    """A frame cut to a readable length for a violation message."""
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


class Session:
    """The server side of one socket: its subscription set, muted tokens and the frame rules.

    ``strict`` enforces the 100-id limit; ``custom_features=False`` makes the server ignore
    ``custom_feature_enabled`` (as if the feature did not exist).
    """

    def __init__(self, *, strict: bool = True, custom_features: bool = True) -> None:
        self.strict = strict
        self.custom_features = custom_features
        self.greeted = False  # the subscription frame has been accepted
        self.custom = False  # best_bid_ask, new_market and market_resolved are sent
        self.subscribed: set[str] = set()
        self.muted: set[str] = set()  # subscribed, yet the server sends nothing for them
        self.pings = 0
        self.closed: CloseSocket | None = None

    # ---- what the client sends

    def receive(self, text: str, binary: bool = False) -> Reply:
        """Apply the rules to one received frame and say what the server does."""
        if self.closed is not None:
            return Reply(Kind.IGNORED)
        notes = [f"binary frame {short(text)!r}"] if binary else []
        reply = self._first(text, notes) if not self.greeted else self._later(text, notes)
        if reply.close is not None:
            self.closed = reply.close
        return reply

    def _first(self, text: str, notes: list[str]) -> Reply:
        obj = _json(text)
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("type"), str)
            or obj["type"].lower() != "market"
            or not isinstance(obj.get("assets_ids"), list)
        ):
            notes.append(f"first frame is not a market subscription: {short(text)!r}")
            return Reply(Kind.REFUSED, close=INVALID_SUBSCRIPTION, violations=tuple(notes))
        ids = obj["assets_ids"]
        if self.strict and len(ids) > MAX_IDS_PER_FRAME:
            notes.append(f"subscription with {len(ids)} ids (max {MAX_IDS_PER_FRAME})")
            return Reply(Kind.REFUSED, close=TOO_MANY_ASSETS, violations=tuple(notes))
        self.greeted = True
        self.custom = bool(obj.get("custom_feature_enabled", False)) and self.custom_features
        added = self._add(ids, notes, operation=False)
        dump = bool(obj.get("initial_dump", True))
        return Reply(Kind.SUBSCRIPTION, added=added, dump=dump, violations=tuple(notes))

    def _later(self, text: str, notes: list[str]) -> Reply:
        if text == "PING":
            self.pings += 1
            return Reply(Kind.PING, answer=PONG, violations=tuple(notes))
        obj = _json(text)
        if not isinstance(obj, dict):
            notes.append(f"unexpected frame {short(text)!r}")
            return Reply(Kind.IGNORED, violations=tuple(notes))
        if "type" in obj:
            notes.append(f"second subscription frame on the socket: {short(text)!r}")
            return Reply(Kind.REFUSED, answer=INVALID_OPERATION, violations=tuple(notes))
        op = obj.get("operation")
        ids = obj.get("assets_ids")
        op = op.lower() if isinstance(op, str) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(ids, list):
            notes.append(f"invalid operation frame {short(text)!r}")
            return Reply(Kind.REFUSED, answer=INVALID_OPERATION, violations=tuple(notes))
        if self.strict and len(ids) > MAX_IDS_PER_FRAME:
            notes.append(f"{op} with {len(ids)} ids (max {MAX_IDS_PER_FRAME})")
            return Reply(Kind.REFUSED, close=TOO_MANY_ASSETS, violations=tuple(notes))
        if "custom_feature_enabled" in obj:
            self.custom = bool(obj["custom_feature_enabled"]) and self.custom_features
        if op == "unsubscribe":
            removed = self._remove(ids, notes)
            return Reply(Kind.UNSUBSCRIBE, removed=removed, violations=tuple(notes))
        added = self._add(ids, notes, operation=True)
        if not added:
            return Reply(Kind.SUBSCRIBE, answer=NO_NEW_ASSETS, violations=tuple(notes))
        dump = bool(obj.get("initial_dump", True))
        return Reply(Kind.SUBSCRIBE, added=added, dump=dump, violations=tuple(notes))

    def _valid_ids(self, ids: Iterable[Any], notes: list[str]) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for tid in ids:
            if not isinstance(tid, str) or not TOKEN_RE.fullmatch(tid):
                notes.append(f"invalid asset id {short(repr(tid))}")
                continue
            if tid in seen:
                notes.append(f"asset {tid} twice in one frame")
                continue
            seen.add(tid)
            out.append(tid)
        return out

    def _add(self, ids: Iterable[Any], notes: list[str], operation: bool) -> tuple[str, ...]:
        added: list[str] = []
        for tid in self._valid_ids(ids, notes):
            if tid in self.subscribed:
                if operation:
                    notes.append(f"re-subscribe of already subscribed asset {tid}")
                continue
            self.subscribed.add(tid)
            added.append(tid)
        return tuple(added)

    def _remove(self, ids: Iterable[Any], notes: list[str]) -> tuple[str, ...]:
        removed: list[str] = []
        for tid in self._valid_ids(ids, notes):
            if tid not in self.subscribed:
                notes.append(f"unsubscribe of asset {tid} that is not subscribed on the socket")
                continue
            self.subscribed.discard(tid)
            self.muted.discard(tid)
            removed.append(tid)
        return tuple(removed)

    # ---- what the server sends on it

    def mute(self, token: str) -> None:
        """This subscription of ``token`` stays silent until unsubscribed (a fault to rescue)."""
        if token in self.subscribed:
            self.muted.add(token)

    def receives(self, token: str, custom_only: bool = False) -> bool:
        """Does the socket get ``token``'s events (the custom-feature ones with custom_only)?"""
        if token not in self.subscribed or token in self.muted:
            return False
        return self.custom or not custom_only

    def shown(self, assets: Iterable[str]) -> set[str]:
        """Of the assets in one market's price_change, those whose entries this socket gets.

        The live server sends the whole market's entries (siblings leak) to a socket holding any
        of them; a muted token's entries are held back, and so is the frame if nothing it holds
        is left.
        """
        visible = set(assets) - self.muted
        return visible if visible & self.subscribed else set()

    @property
    def gets_broadcasts(self) -> bool:
        """Venue-wide new_market broadcasts reach custom-feature sockets once subscribed."""
        return self.greeted and self.custom
