"""Blocking commands as one Redis server runs them: BLPOP, BRPOP, BLMOVE,
BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, XREAD BLOCK and XREADGROUP
BLOCK return what another client adds while they wait, and nil when their
timeout passes; blocked clients do not hold up anybody else; a client that
disconnects while blocked does not take a later push.

Timing is only ever checked loosely: "returned after at least the timeout"
and, as the bound for "does not hang", the socket timeouts (10 s for normal
clients). Multi-key blocking calls use hash-tagged keys (one slot)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import proxy_client
from issue4_helpers import plain, raw_client, stream_entries, wait_blocked, wait_until

# Blocked clients get a socket timeout well above anything they wait for,
# so that a timeout-0 BLPOP is not cut by redis-py; a hang still ends.
BLOCKED_SOCKET_TIMEOUT = 60


class Blocked:
    """Runs `call(client)` on a client of its own in a daemon thread."""

    def __init__(self, config, call):
        self.client = proxy_client(config, socket_timeout=BLOCKED_SOCKET_TIMEOUT)
        self.result = self.error = None
        self.elapsed = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call):
        start = time.monotonic()
        try:
            self.result = call(self.client)
        except Exception as exc:  # reported by wait()
            self.error = exc
        self.elapsed = time.monotonic() - start

    def wait(self, timeout=15):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the blocked call did not return within {timeout} s"
        self.client.close()
        if self.error is not None:
            raise self.error
        return self.result


def _f(pairs):
    """[member, score] pairs -> (member, float score)."""
    return [(m, float(s)) for m, s in pairs]


# (id, blocking call(client, t), feed(r, t), expected(result, r, t) -> bool)
UNBLOCKED_BY_DATA = [
    (
        "blpop",
        lambda c, t: c.blpop([t("a"), t("b")], 5),
        lambda r, t: r.rpush(t("b"), "x", "y"),
        lambda res, r, t: plain(res) == [t("b").encode(), b"x"] and r.lrange(t("b"), 0, -1) == [b"y"],
    ),
    (
        "brpop",
        lambda c, t: c.brpop([t("a"), t("b")], 5),
        lambda r, t: r.rpush(t("a"), "x", "y"),
        lambda res, r, t: plain(res) == [t("a").encode(), b"y"] and r.lrange(t("a"), 0, -1) == [b"x"],
    ),
    (
        "blmove",
        lambda c, t: c.blmove(t("src"), t("dst"), 5, "RIGHT", "LEFT"),
        lambda r, t: r.rpush(t("src"), "x", "y"),
        lambda res, r, t: res == b"y" and r.lrange(t("dst"), 0, -1) == [b"y"],
    ),
    (
        "brpoplpush",
        lambda c, t: c.brpoplpush(t("src"), t("dst"), 5),
        lambda r, t: r.rpush(t("src"), "x"),
        lambda res, r, t: res == b"x" and r.lrange(t("dst"), 0, -1) == [b"x"] and r.exists(t("src")) == 0,
    ),
    (
        "blmpop",
        lambda c, t: c.blmpop(5, 2, t("a"), t("b"), direction="LEFT", count=2),
        lambda r, t: r.rpush(t("b"), "x", "y", "z"),
        lambda res, r, t: plain(res) == [t("b").encode(), [b"x", b"y"]],
    ),
    (
        "bzpopmin",
        lambda c, t: c.bzpopmin([t("z1"), t("z2")], 5),
        lambda r, t: r.zadd(t("z2"), {"low": 1, "high": 2}),
        lambda res, r, t: plain(res)[:2] == [t("z2").encode(), b"low"] and float(res[2]) == 1.0,
    ),
    (
        "bzpopmax",
        lambda c, t: c.bzpopmax(t("z1"), 5),
        lambda r, t: r.zadd(t("z1"), {"low": 1, "high": 2}),
        lambda res, r, t: plain(res)[:2] == [t("z1").encode(), b"high"] and float(res[2]) == 2.0,
    ),
    (
        "bzmpop",
        lambda c, t: c.bzmpop(5, 2, [t("z1"), t("z2")], min=True, count=5),
        lambda r, t: r.zadd(t("z2"), {"a": 1, "b": 2}),
        lambda res, r, t: res[0] == t("z2").encode() and _f(res[1]) == [(b"a", 1.0), (b"b", 2.0)],
    ),
]


@pytest.mark.parametrize("name, block, feed, expected", UNBLOCKED_BY_DATA, ids=[x[0] for x in UNBLOCKED_BY_DATA])
def test_blocked_pop_gets_data_pushed_by_another_client(r, config, keys, name, block, feed, expected):
    """A blocking pop waiting on empty keys returns what another client
    pushes, from the key it was pushed to, and takes only that."""

    def t(suffix):
        return keys.t(f"{name}:{suffix}")

    blocked = Blocked(config, lambda c: block(c, t))
    wait_blocked(r)
    feed(r, t)
    result = blocked.wait()
    assert result is not None, f"[{config.label}] {name} timed out although data was pushed"
    assert expected(result, r, t), f"[{config.label}] {name} returned {result!r}"


TIMING_OUT = [
    ("blpop", lambda c, t: c.blpop([t("a"), t("b")], 0.2)),
    ("brpop", lambda c, t: c.brpop(t("a"), 0.2)),
    ("blmove", lambda c, t: c.blmove(t("a"), t("b"), 0.2)),
    ("brpoplpush", lambda c, t: c.brpoplpush(t("a"), t("b"), 0.2)),
    ("blmpop", lambda c, t: c.blmpop(0.2, 2, t("a"), t("b"), direction="RIGHT")),
    ("bzpopmin", lambda c, t: c.bzpopmin(t("z"), 0.2)),
    ("bzpopmax", lambda c, t: c.bzpopmax([t("z"), t("y")], 0.2)),
    ("bzmpop", lambda c, t: c.bzmpop(0.2, 1, [t("z")], max=True)),
    ("xread", lambda c, t: c.xread({t("s"): "$"}, block=200)),
]


def test_blocking_timeouts_return_nil(r, config, keys):
    """Each blocking command with a 0.2 s timeout on empty keys returns nil
    (None) once the timeout has passed, not before. All nine wait at the
    same time, each on its own connection."""
    blocked = [
        Blocked(config, lambda c, call=call, n=n: call(c, lambda s: keys.t(f"{n}:{s}"))) for n, call in TIMING_OUT
    ]
    for (name, _), b in zip(TIMING_OUT, blocked):
        result = b.wait()
        # redis-py turns XREAD's nil into an empty list (RESP2) or dict (RESP3).
        nil = (None, [], {}) if name == "xread" else (None,)
        assert result in nil, f"[{config.label}] {name} with a 0.2 s timeout returned {result!r}"
        assert b.elapsed >= 0.15, f"[{config.label}] {name} returned after {b.elapsed:.3f} s, before its timeout"


def test_xread_block_gets_an_entry_added_later(r, config, keys):
    """XREAD BLOCK on `$` returns the entry another client adds while it
    waits (and only that one)."""
    stream = keys.k("stream")
    r.xadd(stream, {"old": "1"}, id="1-1")
    blocked = Blocked(config, lambda c: c.xread({stream: "$"}, block=5000))
    wait_blocked(r)
    r.xadd(stream, {"new": "2"}, id="2-1")
    got = blocked.wait()
    assert stream_entries(got, stream) == [("2-1", {"new": "2"})], f"[{config.label}] {got!r}"


def test_xreadgroup_block_gets_an_entry_added_later(r, config, keys):
    """XREADGROUP BLOCK with `>` returns the entry another client adds while
    it waits, and records it as pending for that consumer."""
    stream = keys.k("stream")
    r.xgroup_create(stream, "group", id="$", mkstream=True)
    blocked = Blocked(config, lambda c: c.xreadgroup("group", "alice", {stream: ">"}, block=5000))
    wait_blocked(r)
    r.xadd(stream, {"job": "1"}, id="5-1")
    got = blocked.wait()
    assert stream_entries(got, stream) == [("5-1", {"job": "1"})], f"[{config.label}] {got!r}"
    pending = r.xpending(stream, "group")
    assert pending["pending"] == 1, f"[{config.label}] XPENDING {pending!r}"


def test_twenty_blocked_clients_do_not_hold_up_fifty_others(r, config, keys):
    """20 clients blocked in BLPOP (timeout 0, a list each) while 50 other
    clients each run 200 SET/GET: all 50 finish (each command within the
    10 s socket timeout: "does not hang", no latency measured), then an LPUSH
    to each list releases its blocked client with that value."""
    lists = [keys.k(f"list:{i}") for i in range(20)]
    blocked = [Blocked(config, lambda c, key=key: c.blpop(key, 0)) for key in lists]
    wait_blocked(r)

    def worker(n):
        client = proxy_client(config)
        try:
            for i in range(200):
                key = keys.k(f"w:{n}:{i % 10}")
                assert client.set(key, f"{n}-{i}") is True
                assert client.get(key) == f"{n}-{i}".encode()
            return n
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        done = list(pool.map(worker, range(50), timeout=120))
    assert done == list(range(50))
    assert all(b.thread.is_alive() for b in blocked), "a BLPOP with timeout 0 returned before any push"

    for i, key in enumerate(lists):
        r.lpush(key, f"value-{i}")
    for i, (key, b) in enumerate(zip(lists, blocked)):
        assert plain(b.wait()) == [key.encode(), f"value-{i}".encode()], f"[{config.label}] blocked client {i}"
    assert r.exists(*lists) == 0, "each pushed value was taken by its blocked client"


def test_client_disconnected_while_blocked_does_not_take_a_later_push(r, config, keys):
    """A client that sends BLPOP (timeout 0) and closes its socket while
    blocked stops waiting: a value pushed afterwards stays in the list for
    the next reader (the proxy may take a moment to notice the close)."""
    key = keys.k("abandoned")
    raw = raw_client(config.expected_protocol)
    raw.send("BLPOP", key, 0)
    wait_blocked(r)
    raw.close()

    def push_then_pop():
        r.lpush(key, "1")
        return r.lpop(key) == b"1"

    assert wait_until(push_then_pop, timeout=1.0, interval=0.1), (
        f"[{config.label}] every value pushed within ~1 s of the close was taken by the closed client's BLPOP"
    )
    assert r.exists(key) == 0
