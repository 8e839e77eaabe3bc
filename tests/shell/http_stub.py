"""What the REST tests share: a local HTTP server's life cycle and a sink for what the worker posts."""

from __future__ import annotations

import queue
import threading
from http.server import ThreadingHTTPServer

from sidecar.shell.inbox import InboxMessage, RestAnswer


class StubServer:
    """Serves ``server`` on a daemon thread until :meth:`close`."""

    server: ThreadingHTTPServer

    def serve(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Posted:
    """The runtime inbox as the REST worker sees it: ``post`` in, ``get`` out (with a timeout)."""

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[InboxMessage] = queue.SimpleQueue()

    def post(self, event: InboxMessage) -> None:
        self.q.put(event)

    def get(self, timeout: float = 10.0) -> InboxMessage:
        return self.q.get(timeout=timeout)

    def answer(self, timeout: float = 10.0) -> RestAnswer:
        """The next message, which must be a book answer."""
        event = self.get(timeout)
        assert isinstance(event, RestAnswer), event
        return event
