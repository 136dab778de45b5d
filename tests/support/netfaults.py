"""Network faults between a client and a real server, played by a TCP front on 127.0.0.1: the tests of
bounded S3 timeouts (a server that accepts and never answers) and of `status --watch` riding out a blip
(connections cut for a few seconds, then served again) need the fault itself, not a mock of its effect."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Literal

Mode = Literal["forward", "hang", "drop"]


class TcpFront:
    """A listening socket on 127.0.0.1 (`port`) in front of `target`, in one of three modes:

    - "forward": bytes pass both ways (a plain proxy; needs a target), at most `rate` bytes a second
      each way when given (a slow link);
    - "hang": connections are accepted and never answered (a server that is up but stuck);
    - "drop": each new connection is reset at once (the network or the server is gone for a while).

    Switching to "hang" or "drop" cuts the connections being forwarded, so that a client's kept-alive
    connection cannot slip past the fault.
    """

    def __init__(
        self, target: tuple[str, int] | None = None, mode: Mode = "forward", rate: float | None = None
    ) -> None:
        if mode == "forward" and target is None:
            raise ValueError("forwarding needs a target")
        self.target = target
        self.rate = rate
        self.mode: Mode = mode
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []  # every socket this front holds, to cut or close
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpFront:
        self._thread.start()
        return self

    def set_mode(self, mode: Mode) -> None:
        """Play another fault (or none): the connections held so far are cut unless forwarding goes on."""
        if mode == "forward" and self.target is None:
            raise ValueError("forwarding needs a target")
        self.mode = mode
        if mode != "forward":
            self._cut_all()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()
        self._cut_all()

    # -- internals --------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "drop":
                _reset(conn)
            elif self.mode == "hang":
                self._hold(conn)
            else:
                self._forward(conn)

    def _hold(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.extend(socks)

    def _forward(self, client: socket.socket) -> None:
        assert self.target is not None
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        client.settimeout(None)
        self._hold(client, upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(src, dst, self.rate), daemon=True).start()

    def _cut_all(self) -> None:
        with self._lock:
            socks, self._open = self._open, []
        for s in socks:
            _reset(s)


def _pump(src: socket.socket, dst: socket.socket, rate: float | None) -> None:
    """Copy `src` to `dst` until either end closes (or the front cuts them), at most `rate` bytes a
    second when given (in chunks of 16 KiB, so that bytes keep flowing)."""
    chunk = 16384 if rate else 65536
    try:
        while data := src.recv(chunk):
            dst.sendall(data)
            if rate:
                time.sleep(len(data) / rate)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the peer's next read or write fails at once. Shutting the read
    side first wakes a pump thread blocked in `recv` on it (a bare close does not)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()
