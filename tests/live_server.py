"""The real app on a real socket, and a real TCP proxy in front of it to make network faults.

``serve_asgi`` runs an ASGI app (``create_app(...)``, possibly wrapped) in uvicorn on a thread. ``TcpProxy``
forwards bytes to a server and can be taken down and brought back (an outage: it accepts and drops every
connection, as a balancer with no backend does), cut each connection after N bytes of answer (a dropped
download), or answer every request itself (a proxy's own error page); it records what it forwarded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serves ``app`` on 127.0.0.1 until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:  # uvicorn sets it once the socket listens
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` (host, port), one pair of threads per connection.

    Attributes:
        up: False drops every new connection at once (and :meth:`down` closes the open ones).
        cut_after: close each connection once this many answer bytes went through it.
        answer: bytes sent back instead of forwarding (then the connection is closed).
        sent: every byte forwarded upstream (the requests), for assertions on the wire.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.up = True
        self.cut_after: int | None = None
        self.answer: bytes | None = None
        self.sent = bytearray()
        self.dropped = 0
        self.cuts = 0
        self._changed = threading.Condition()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self) -> None:
        """An outage: the open connections are cut and new ones dropped until :meth:`restore`."""
        self.up = False
        with self._changed:
            for sock in list(self._open):
                _close(sock)

    def restore(self) -> None:
        self.up = True

    def wait_for(self, *, dropped: int = 0, cuts: int = 0, timeout: float = 60) -> None:
        """Blocks until at least ``dropped`` connections were dropped and ``cuts`` cut."""
        with self._changed:
            ok = self._changed.wait_for(lambda: self.dropped >= dropped and self.cuts >= cuts, timeout)
        assert ok, f"proxy saw {self.dropped} drops and {self.cuts} cuts, expected {dropped} and {cuts}"

    def close(self) -> None:
        self.down()
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                _close(conn)
                with self._changed:
                    self.dropped += 1
                    self._changed.notify_all()
            elif self.answer is not None:
                threading.Thread(target=self._answer, args=(conn, self.answer), daemon=True).start()
            else:
                threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket, answer: bytes) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            _close(conn)
            return
        with self._changed:
            self._open |= {conn, upstream}
        requests = threading.Thread(target=self._pump, args=(conn, upstream, True), daemon=True)
        requests.start()
        self._pump(upstream, conn, False)
        requests.join()
        with self._changed:
            self._open -= {conn, upstream}

    def _pump(self, src: socket.socket, dst: socket.socket, to_upstream: bool) -> None:
        passed = 0
        try:
            while data := src.recv(65536):
                if to_upstream:
                    self.sent += data
                elif self.cut_after is not None and passed + len(data) >= self.cut_after:
                    dst.sendall(data[: self.cut_after - passed])
                    with self._changed:
                        self.cuts += 1
                        self._changed.notify_all()
                    break
                dst.sendall(data)
                passed += len(data)
        except OSError:
            pass
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
