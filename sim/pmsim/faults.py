"""The simulator's fault and introspection controls: per-socket faults, refusals, the venue outage.

A mixin of :class:`~pmsim.server.Simulator` (which owns the loop, the fan-out and the ledger), kept
apart so the façade stays readable. Socket faults are marshalled onto the loop; counters and
refusals live in the thread-safe :class:`~pmsim.ledger.Ledger`.
"""

from __future__ import annotations

from .conns import ConnInfo, Mode
from .fanout import Fanout
from .ledger import Ledger
from .loopthread import LoopThread

RETRY_STATUSES = (429, 503)  # what a venue outage answers handshakes (and optionally REST) with


class Faults:
    """Faults, refusals and counters of the simulated exchange."""

    _loop: LoopThread
    _fanout: Fanout
    _ledger: Ledger

    # ------------------------------------------------------------------ counters and refusals

    @property
    def violations(self) -> list[str]:
        """Protocol violations seen from clients (a copy). Tests assert this stays empty."""
        return self._ledger.violations

    @property
    def handshakes(self) -> int:
        """WebSocket handshake attempts, rejected ones included."""
        return self._ledger.handshakes

    @property
    def rest_requests(self) -> int:
        return self._ledger.rest_requests

    def reject_handshakes(self, status: int, count: int) -> None:
        """Answer the next `count` handshakes with HTTP `status` (e.g. 429) instead of upgrading."""
        self._ledger.reject_handshakes(status, count)

    @property
    def rest_in_flight(self) -> int:
        """REST requests received and not yet answered (see rest_delay)."""
        return self._ledger.rest_in_flight

    def rest_delay(self, seconds: float) -> None:
        """Hold every REST answer this long after its books were read (0 = answer at once): the
        answer is then older than the socket's events, and Redis can restart while it is in flight."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._ledger.set_rest_delay(float(seconds))

    def rest_fail(self, status: int, count: int) -> None:
        """Fail the next `count` REST requests with `status`."""
        self._ledger.rest_fail(status, count)

    # ------------------------------------------------------------------ venue outage

    def venue_down(self, status: int = 503, drop: bool = True, *, rest: bool = False) -> None:
        """The whole venue goes down: every WS handshake is refused with HTTP ``status`` (503 or
        429, with Retry-After) until :meth:`venue_up`; drop=True also aborts every open socket (as
        a cut-over does); rest=True answers every REST request with ``status`` too."""
        if status not in RETRY_STATUSES:
            raise ValueError(f"status must be one of {RETRY_STATUSES}, got {status}")
        self._ledger.venue_down(status, rest, drop)  # refuse first, so a dropped client cannot slip back in
        if drop:
            self._loop.call(self._fanout.drop, None)

    def venue_up(self) -> None:
        """Handshakes (and REST) are served again; sockets reconnect as their clients retry."""
        self._ledger.venue_up()

    @property
    def venue_is_down(self) -> bool:
        return self._ledger.down

    def handshake_attempts(self, *, during_outage: bool = False) -> int:
        """WebSocket handshake attempts: all of them, or (during_outage=True) those made since the
        last :meth:`venue_down` while the venue was down (every one of them was refused)."""
        return self._ledger.outage_handshakes if during_outage else self._ledger.handshakes

    def retry_after(self, seconds: int) -> None:
        """The Retry-After header (whole seconds) on every 429/503 answer, WS handshake or REST
        (default 1; 0 leaves the header out)."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._ledger.set_retry_after(int(seconds))

    # ------------------------------------------------------------------ faults and introspection

    def connections(self) -> list[ConnInfo]:
        """Snapshots of every connection ever accepted, in id order."""
        return self._loop.call(lambda: [c.info() for c in self._fanout.conns.values()])

    def conn(self, conn_id: int) -> ConnInfo:
        return self._loop.call(lambda: self._fanout.conns[conn_id].info())

    def conn_for(self, token: str) -> ConnInfo | None:
        """The open connection (most recent) currently subscribed to token."""

        def find() -> ConnInfo | None:
            conn = self._fanout.find(token)
            return conn.info() if conn is not None else None

        return self._loop.call(find)

    def sent_frames(self, conn_id: int) -> int:
        return self._loop.call(lambda: self._fanout.conns[conn_id].sent)

    def drop(self, conn_id: int | None = None) -> None:
        """Abort the TCP connection (no close frame) of one or all connections."""
        self._loop.call(self._fanout.drop, conn_id)

    def close(self, conn_id: int, code: int = 1011, reason: str = "") -> None:
        """Clean close with a code, after the frames already queued on that connection."""
        self._loop.call(self._fanout.close, conn_id, code, reason)

    def _set_mode(self, conn_id: int, mode: Mode) -> None:
        self._loop.call(self._fanout.set_mode, conn_id, mode)

    def zombie(self, conn_id: int) -> None:
        """Keep answering PING with PONG but never send market data again on this connection."""
        self._set_mode(conn_id, "zombie")

    def relay_only(self, conn_id: int) -> None:
        """A zombie that still relays venue-wide broadcasts (new_market): PONGs and broadcasts, but
        never this connection's own market data again."""
        self._set_mode(conn_id, "relay_only")

    def half_open(self, conn_id: int) -> None:
        """Send nothing at all (no PONG, no data, no FIN) and ignore input; the socket stays open."""
        self._set_mode(conn_id, "half_open")

    def slow(self, conn_id: int, delay_s: float) -> None:
        """Delay every outgoing frame on that connection by delay_s."""
        self._loop.call(self._fanout.slow, conn_id, float(delay_s))

    def mute(self, token: str, subscribes: int | None = None) -> None:
        """Never send anything for token to the next `subscribes` subscriptions of it (None: all).

        Muting applies per subscription: a muted subscription stays silent until unsubscribed, so
        the client's unsubscribe+subscribe "redrive" is what rescues it once the count is used up.
        """
        if subscribes is not None and subscribes <= 0:
            raise ValueError("subscribes must be positive or None")
        self._loop.call(self._fanout.mute, token, subscribes)

    def unmute(self, token: str) -> None:
        """Forget the mute count; subscriptions already muted stay silent until re-subscribed."""
        self._loop.call(self._fanout.unmute, token)
