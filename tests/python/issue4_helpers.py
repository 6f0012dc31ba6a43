"""Helpers shared by the issue 4 suites (multi-key, cluster-wide,
transactions, pub/sub, blocking).

Every test in those files passes against ONE plain standalone redis-server
(that is the reference behaviour); the few that only make sense through
slotgate (CROSSSLOT refusals, refused administrative commands) skip on a
plain server, detected by `is_slotgate`.
"""

import socket
import time

import pytest
from redis.crc import key_slot

from conftest import PORT, SOCKET_TIMEOUT

CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"
EXECABORT = "EXECABORT Transaction discarded because of previous errors."

_slotgate = {}


def is_slotgate(client):
    """True when `client` talks to slotgate: its INFO has a `# Proxy`
    section with `slotgate_version` (a plain server answers INFO proxy with
    nothing)."""
    port = client.connection_pool.connection_kwargs.get("port")
    if port not in _slotgate:
        _slotgate[port] = "slotgate_version" in client.info("proxy")
    return _slotgate[port]


def skip_unless_slotgate(client, what):
    if not is_slotgate(client):
        pytest.skip(f"slotgate only: {what} (a plain standalone server has no slots)")


def error_line(exc):
    """The error line as the server sent it, without the leading '-'.

    redis-py strips a known error code from the message (`ERR`, `CROSSSLOT`,
    `EXECABORT`, ...) and keeps it in `status_code`; this puts it back."""
    code = getattr(exc, "status_code", None)
    return f"{code} {exc}" if code else str(exc)


def text(value):
    """bytes or str -> str (replies differ with decode_responses)."""
    return value.decode() if isinstance(value, bytes) else value


def plain(value):
    """Tuples -> lists, recursively, and bytes kept: RESP2 and RESP3 shapes of
    redis-py differ in tuple/list only for the pops used here."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def slots_of(names):
    return {key_slot(n.encode() if isinstance(n, str) else n) for n in names}


def wait_until(predicate, timeout=5.0, interval=0.02):
    """Polls `predicate` until it returns a truthy value or `timeout` passes;
    returns the last value (for "eventually" checks, never for speed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def stream_entries(reply, stream):
    """The entries XREAD/XREADGROUP returned for `stream`, whatever the shape
    (RESP2: [[name, entries]], RESP3: {name: [entries]} in redis-py 8)."""
    if not reply:
        return []
    name = stream.encode() if isinstance(stream, str) else stream
    if isinstance(reply, dict):
        for key, value in reply.items():
            if key in (name, text(name)):
                # redis-py 8 wraps the entries in one more list on RESP3.
                if value and isinstance(value[0], list):
                    value = value[0]
                return [(text(i), {text(k): text(v) for k, v in f.items()}) for i, f in value]
        return []
    for key, value in reply:
        if key in (name, text(name)):
            return [(text(i), {text(k): text(v) for k, v in f.items()}) for i, f in value]
    return []


# --------------------------------------------------------------------------
# A tiny RESP2/RESP3 client on a raw socket, for what redis-py hides or
# refuses to send: subscribed-state errors, push frames between replies,
# a MULTI or a blocking command cut by closing the socket.


class RespError(str):
    """An error reply (`-...` or `!...`): the line without the leading '-'."""


class Push(list):
    """A RESP3 push frame (`>`)."""


class RawConn:
    def __init__(self, port=PORT, timeout=SOCKET_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, (int, float)):
                arg = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(out)

    def send(self, *args):
        self.sock.sendall(self.encode(*args))

    def call(self, *args):
        self.send(*args)
        return self.read()

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def read(self):
        """One reply; attributes (`|`) are skipped."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        if kind == b">":
            return Push(self.read() for _ in range(int(rest)))
        if kind == b"~":
            return [self.read() for _ in range(int(rest))]
        if kind == b"%":
            n = int(rest)
            result = {}
            for _ in range(n):
                key = self.read()
                result[key] = self.read()
            return result
        if kind == b"|":
            for _ in range(2 * int(rest)):
                self.read()
            return self.read()
        if kind == b"_":
            return None
        if kind == b"#":
            return rest == b"t"
        if kind == b",":
            return float(rest)
        if kind == b"(":
            return int(rest)
        if kind == b"!":
            return RespError(self._exact(int(rest)).decode())
        if kind == b"=":
            return self._exact(int(rest))[4:]
        raise AssertionError(f"not a RESP reply: {line!r}")


def raw_client(protocol=2, port=PORT, timeout=SOCKET_TIMEOUT):
    """A RawConn; with protocol=3 it has said HELLO 3 (reply checked)."""
    conn = RawConn(port, timeout)
    if protocol == 3:
        hello = conn.call("HELLO", "3")
        assert isinstance(hello, dict) and hello.get(b"proto") == 3, f"HELLO 3 answered {hello!r}"
    return conn


def wait_blocked(client, timeout=2.0):
    """Gives a command sent by another thread or socket time to block before
    the test goes on. On a plain server it polls INFO clients until
    blocked_clients > 0; through slotgate (whose INFO sums the masters, where
    the count is not this client's alone) it waits a short moment. Never an
    assertion: a command that arrives late only finds its data at once."""
    if is_slotgate(client):
        time.sleep(0.25)
        return

    def blocked():
        return int(client.info("clients").get("blocked_clients", 0)) > 0

    wait_until(blocked, timeout=timeout, interval=0.01)
