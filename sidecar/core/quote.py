"""What the sidecar knows about one token, and how that becomes the Redis quote hash.

Field names here are the public Redis contract (docs/redis-contract.md); statuses: sidecar.core.status.
"""

from __future__ import annotations

from sidecar.core.book import EMPTY_TOP, Book, Top
from sidecar.core.status import LIVE, PENDING, SUBSCRIBING, Status


class TokenState:
    """One desired token: its book, its quote fields and its subscription bookkeeping."""

    __slots__ = (
        "book",
        "confirmed",
        "event_gap",
        "events",
        "fresh",
        "last_event_at",
        "last_quiet_check",
        "last_recv",
        "last_touch_write",
        "last_trade_price",
        "last_trade_side",
        "last_trade_size",
        "last_trade_ts",
        "market",
        "min_order_size",
        "moves",
        "neg_risk",
        "next_redrive_at",
        "reason",
        "redrives",
        "resync_deadline",
        "seq",
        "shard_id",
        "shown",
        "source",
        "stall_redrives",
        "status",
        "sub_sent_at",
        "tick_size",
        "token",
        "ts",
        "updated_at",
    )

    def __init__(self, token: str, seq_base: int, now: float) -> None:
        self.token = token
        self.book = Book()
        self.shown: Top = EMPTY_TOP  # the prices writes show (see prices())
        self.status: Status = PENDING  # status and reason change only in sidecar.core.status.set_status
        self.reason = SUBSCRIBING
        self.seq = seq_base
        self.ts: int | None = None  # exchange ms of the latest event applied
        self.updated_at: int | None = None  # sidecar ms when the exchange last confirmed the top
        self.source = ""
        self.market: str | None = None
        self.tick_size: str | None = None
        self.min_order_size: str | None = None
        self.neg_risk: bool | None = None
        self.last_trade_price: str | None = None
        self.last_trade_size: str | None = None
        self.last_trade_side: str | None = None
        self.last_trade_ts: int | None = None
        # subscription lifecycle
        self.shard_id = -1
        self.sub_sent_at: float | None = None
        self.confirmed = False
        self.redrives = 0
        self.moves = 0
        self.next_redrive_at = 0.0
        self.stall_redrives = 0
        self.resync_deadline: float | None = None
        # activity
        self.events = 0
        self.last_event_at = now
        self.event_gap: float | None = None  # EWMA of seconds between events
        self.last_quiet_check = now
        self.last_recv: float | None = None  # receive time of the frame behind the newest change
        self.last_touch_write = 0.0
        self.fresh = True  # next write clears any expiry left from an earlier unsubscribe

    def prices(self) -> Top:
        """The top a write shows. Only a book that descends from a snapshot with every delta since
        (status ``live``) makes prices; otherwise the prices last shown while live, or none before
        the first book. Deltas applied to an untrusted book never reach Redis."""
        if self.status == LIVE:
            self.shown = self.book.top()
        return self.shown

    def fields(self, epoch: str) -> dict[str, str]:
        bid, bid_size, ask, ask_size = self.prices()
        out = {
            "bid": bid,
            "ask": ask,
            "bid_size": bid_size,
            "ask_size": ask_size,
            "ts": "" if self.ts is None else str(self.ts),
            "updated_at": "" if self.updated_at is None else str(self.updated_at),
            "seq": str(self.seq),
            "epoch": epoch,
            "status": self.status,
            "source": self.source,
            "reason": self.reason,
        }
        if self.market is not None:
            out["market"] = self.market
        if self.tick_size is not None:
            out["tick_size"] = self.tick_size
        if self.min_order_size is not None:
            out["min_order_size"] = self.min_order_size
        if self.neg_risk is not None:
            out["neg_risk"] = "true" if self.neg_risk else "false"
        if self.last_trade_price is not None:
            out["last_trade_price"] = self.last_trade_price
            out["last_trade_size"] = self.last_trade_size or ""
            out["last_trade_side"] = self.last_trade_side or ""
            out["last_trade_ts"] = "" if self.last_trade_ts is None else str(self.last_trade_ts)
        return out
