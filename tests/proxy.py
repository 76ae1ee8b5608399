"""A TCP proxy on loopback that a test can cut, to take an S3 endpoint down and back up."""

import re
import socket
import threading
import time


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to an upstream port.

    Cut, it drops every connection; stalled, it holds them open and says nothing;
    dripping, it passes answers on a byte at a time, ``drip`` seconds apart;
    refusing, it answers every request with S3's 503 SlowDown itself.
    With ``latency``, each new connection and each request (what the client
    sends after an answer) waits that long: a distant S3 on loopback.
    """

    def __init__(self, upstream_port: int, latency: float = 0.0):
        self.upstream_port = upstream_port
        self.latency = latency
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._down = False
        self._stalled = False
        self._held: list[socket.socket] = []
        self._cut_after: int | None = None
        self._forwarded = 0
        self._closed = False
        self.drop_range = False  # strip Range headers: an endpoint that ignores them
        self.drop_if_none_match = False  # an endpoint without conditional writes
        self.drip: float | None = None  # seconds between the bytes of answers
        self.refusing = False  # answer 503 SlowDown to everything
        self._in_flight = 0
        self.peak_in_flight = 0  # the most requests that waited for an answer at once
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._down = True
            for connection in self._connections:
                _shut(connection)
            self._connections.clear()

    def cut_after(self, upstream_bytes: int) -> None:
        """Cut once this many more bytes went upstream (in the middle of an upload)."""
        with self._lock:
            self._forwarded = 0
            self._cut_after = upstream_bytes

    def stall(self) -> None:
        """Keep every connection open and forward nothing: an endpoint that hangs."""
        with self._lock:
            self._stalled = True

    def restore(self) -> None:
        with self._lock:
            self._down = False
            self._stalled = False
            self.drip = None
            self.refusing = False
            self._cut_after = None
            for connection in self._held:
                _shut(connection)
            self._held.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down, stalled = self._down, self._stalled
                if stalled:
                    self._held.append(client)
                    continue
            if down:
                _shut(client)
                continue
            if self.refusing:
                threading.Thread(target=_slow_down, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _shut(client)
                continue
            with self._lock:
                self._connections += [client, upstream]
            turn = {"request": True}  # is the client's next byte a new request?
            for source, target, to_upstream in ((client, upstream, True),
                                                (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, target, to_upstream, turn),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool,
              turn: dict) -> None:
        try:
            while data := source.recv(65536):
                if upstream and self._count(len(data)):
                    self.cut()
                    return
                if upstream and turn["request"]:
                    self._count_in_flight(+1)
                    if self.drop_if_none_match:
                        data = re.sub(rb"(?im)^if-none-match:[^\r\n]*\r\n", b"", data)
                    if self.drop_range:
                        data = re.sub(rb"(?im)^range:[^\r\n]*\r\n", b"", data)
                    if self.latency:
                        time.sleep(self.latency)
                elif not upstream and not turn["request"]:
                    self._count_in_flight(-1)  # the first bytes of its answer
                turn["request"] = not upstream
                while self._stalled and not self._closed:
                    time.sleep(0.05)
                if not upstream:
                    data = self._dripped(data, target)
                target.sendall(data)
        except OSError:
            pass
        _shut(target)

    def _dripped(self, data: bytes, target: socket.socket) -> bytes:
        """Send ``data`` a byte at a time while dripping; what is left once it stops."""
        while data and self.drip and not self._closed:
            target.sendall(data[:1])
            data = data[1:]
            time.sleep(self.drip)
        return data

    def _count_in_flight(self, change: int) -> None:
        with self._lock:
            self._in_flight += change
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

    def _count(self, size: int) -> bool:
        """Count bytes sent upstream; True when the cut_after budget is spent."""
        with self._lock:
            if self._cut_after is None:
                return False
            self._forwarded += size
            return self._forwarded > self._cut_after


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()


_SLOW_DOWN = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
              b"<Message>Please reduce your request rate.</Message></Error>")


def _slow_down(client: socket.socket) -> None:
    """Read one request and answer it as a throttled S3 does."""
    try:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = client.recv(65536)
            if not chunk:
                return
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        remaining = int(length.group(1)) - len(body) if length else 0
        while remaining > 0:
            chunk = client.recv(min(remaining, 65536))
            if not chunk:
                return
            remaining -= len(chunk)
        client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_SLOW_DOWN)
                       + _SLOW_DOWN)
    except OSError:
        pass
    finally:
        _shut(client)
