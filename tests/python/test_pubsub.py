"""Pub/Sub as one Redis server does it: redis-py's `pubsub()` helper
(SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, SSUBSCRIBE) receives what another
client PUBLISHes or SPUBLISHes; PUBSUB CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/
SHARDNUMSUB describe the subscriptions; and on a raw socket, the
subscribed-state rules of each protocol: RESP2 allows only
(P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET, RESP3 allows any
command and interleaves push frames with the replies.

Channel names are unique to the run, the protocol and the test. Messages
may take a moment to arrive (PUBLISH crosses the cluster bus behind
slotgate), so reads poll with a generous timeout; nothing measures speed."""

import time

import pytest

from conftest import RESP2, Keys, proxy_client
from issue4_helpers import Push, RespError, raw_client, wait_until

WAIT = 5.0  # seconds a message may take to arrive: "eventually", not speed


def _next(p, sharded=False, timeout=WAIT):
    """The next message (subscription confirmations skipped), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sharded:
            msg = p.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
        else:
            msg = p.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if msg is not None:
            return msg
    return None


def _confirmations(p, n, sharded=False, timeout=WAIT):
    """The next `n` subscribe/unsubscribe confirmations, in order (messages
    that arrive meanwhile are skipped)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        if sharded:
            msg = p.get_sharded_message(timeout=0.1)
        else:
            msg = p.get_message(timeout=0.1)
        if msg is not None and msg["type"].endswith("subscribe"):
            got.append((msg["type"], msg["channel"] if msg["pattern"] is None else msg["pattern"], msg["data"]))
    return got


def _b(s):
    return s.encode()


def test_subscribe_receives_messages_from_another_client(r, config, keys):
    """SUBSCRIBE to two channels, then PUBLISH from another connection: each
    message arrives once, in publishing order per channel, with its channel;
    messages to other channels do not arrive."""
    ch1, ch2, other = keys.k("ch:1"), keys.k("ch:2"), keys.k("ch:other")
    p = r.pubsub()
    try:
        p.subscribe(ch1, ch2)
        assert _confirmations(p, 2) == [("subscribe", _b(ch1), 1), ("subscribe", _b(ch2), 2)], f"[{config.label}]"
        for i in range(5):
            r.publish(ch1, f"one-{i}")
        r.publish(other, "not for us")
        r.publish(ch2, "two")
        got = [_next(p) for _ in range(6)]
        assert None not in got, f"[{config.label}] messages missing: {got!r}"
        assert all(m["type"] == "message" and m["pattern"] is None for m in got), got
        assert [m["data"] for m in got if m["channel"] == _b(ch1)] == [_b(f"one-{i}") for i in range(5)]
        assert [m["data"] for m in got if m["channel"] == _b(ch2)] == [b"two"]
        assert p.get_message(ignore_subscribe_messages=True, timeout=0.3) is None, "an extra message arrived"
    finally:
        p.close()


def test_psubscribe_receives_matching_channels(r, config, keys):
    """PSUBSCRIBE <prefix>* receives messages to every matching channel as
    pmessage with the pattern and the channel; others are not delivered."""
    pattern = keys.k("news:*")
    p = r.pubsub()
    try:
        p.psubscribe(pattern)
        assert _confirmations(p, 1) == [("psubscribe", _b(pattern), 1)]
        r.publish(keys.k("sports:1"), "no match")
        r.publish(keys.k("news:1"), "first")
        r.publish(keys.k("news:2"), "second")
        got = [_next(p), _next(p)]
        assert None not in got, f"[{config.label}] {got!r}"
        # Two channels: their relative order is not pinned (behind slotgate
        # they may be published on two nodes); each arrives once.
        assert sorted((m["type"], m["pattern"], m["channel"], m["data"]) for m in got) == [
            ("pmessage", _b(pattern), _b(keys.k("news:1")), b"first"),
            ("pmessage", _b(pattern), _b(keys.k("news:2")), b"second"),
        ], f"[{config.label}] {got!r}"
        assert p.get_message(ignore_subscribe_messages=True, timeout=0.3) is None, "an extra message arrived"
    finally:
        p.close()


def test_unsubscribe_stops_delivery(r, config, keys):
    """UNSUBSCRIBE of one channel answers with the remaining count and stops
    its messages; the other subscriptions keep receiving. PUNSUBSCRIBE and
    UNSUBSCRIBE of everything leave the subscribed state."""
    a, b, pattern = keys.k("u:a"), keys.k("u:b"), keys.k("up:*")
    p = r.pubsub()
    try:
        p.subscribe(a, b)
        p.psubscribe(pattern)
        assert len(_confirmations(p, 3)) == 3
        p.unsubscribe(a)
        assert _confirmations(p, 1) == [("unsubscribe", _b(a), 2)], f"[{config.label}]"
        r.publish(a, "dropped")
        r.publish(b, "kept")
        r.publish(keys.k("up:x"), "by pattern")
        got = [_next(p), _next(p)]
        assert sorted((m["channel"], m["data"]) for m in got if m) == [
            (_b(b), b"kept"),
            (_b(keys.k("up:x")), b"by pattern"),
        ], f"[{config.label}] {got!r}"
        p.punsubscribe()
        p.unsubscribe()
        assert _confirmations(p, 2) == [("punsubscribe", _b(pattern), 1), ("unsubscribe", _b(b), 0)]
        assert p.subscribed is False
    finally:
        p.close()


def test_pubsub_channels_numsub_numpat(r, config, keys):
    """PUBSUB CHANNELS <pattern> lists the active channels that match;
    NUMSUB counts subscribers per channel (0 for none); NUMPAT counts
    pattern subscriptions and drops when one goes away."""
    ch1, ch2, ch3 = keys.k("c:1"), keys.k("c:2"), keys.k("c:3")
    pattern = keys.k("p:*")
    p1, p2 = r.pubsub(), r.pubsub()
    try:
        p1.subscribe(ch1, ch2)
        p2.subscribe(ch1)
        assert len(_confirmations(p1, 2)) == 2 and len(_confirmations(p2, 1)) == 1
        assert sorted(r.pubsub_channels(keys.k("c:*"))) == [_b(ch1), _b(ch2)], f"[{config.label}]"
        assert r.pubsub_channels(keys.k("none:*")) == []
        assert r.pubsub_numsub(ch1, ch2, ch3) == [(_b(ch1), 2), (_b(ch2), 1), (_b(ch3), 0)], f"[{config.label}]"

        p2.psubscribe(pattern)
        assert _confirmations(p2, 1) == [("psubscribe", _b(pattern), 2)]
        with_pattern = r.pubsub_numpat()
        assert isinstance(with_pattern, int) and with_pattern >= 1, f"[{config.label}] NUMPAT {with_pattern!r}"
        p2.punsubscribe(pattern)
        assert _confirmations(p2, 1) == [("punsubscribe", _b(pattern), 1)]
        assert wait_until(lambda: r.pubsub_numpat() <= with_pattern - 1), "NUMPAT did not drop after PUNSUBSCRIBE"

        p1.unsubscribe(ch2)
        assert _confirmations(p1, 1) == [("unsubscribe", _b(ch2), 1)]
        assert wait_until(lambda: r.pubsub_channels(keys.k("c:*")) == [_b(ch1)]), "CHANNELS after UNSUBSCRIBE"
        assert r.pubsub_numsub(ch2) == [(_b(ch2), 0)]
    finally:
        p1.close()
        p2.close()


def test_publish_returns_the_number_of_receivers(r, config, keys):
    """PUBLISH answers how many clients received the message (channel
    subscribers plus matching patterns), 0 when nobody listens; SPUBLISH
    likewise for shard channels."""
    ch, shard = keys.k("count"), keys.k("count-shard")
    assert r.publish(ch, "nobody") == 0
    p1, p2 = r.pubsub(), r.pubsub()
    try:
        p1.subscribe(ch)
        p2.psubscribe(keys.k("count*"))
        assert len(_confirmations(p1, 1)) == 1 and len(_confirmations(p2, 1)) == 1
        assert r.publish(ch, "two receivers") == 2, f"[{config.label}]"
        p1.ssubscribe(shard)
        assert len(_confirmations(p1, 1, sharded=True)) == 1
        assert r.spublish(shard, "one") == 1, f"[{config.label}]"
    finally:
        p1.close()
        p2.close()


def test_ssubscribe_receives_spublish(r, config, keys):
    """SSUBSCRIBE to shard channels (several slots, one SSUBSCRIBE per
    channel) receives what SPUBLISH sends there; PUBSUB SHARDCHANNELS and
    SHARDNUMSUB describe them; SUNSUBSCRIBE stops delivery."""
    channels = [keys.k(f"shard:{i}") for i in range(3)]
    p = r.pubsub()
    try:
        for ch in channels:
            p.ssubscribe(ch)
        got = _confirmations(p, 3, sharded=True)
        assert got == [("ssubscribe", _b(ch), i + 1) for i, ch in enumerate(channels)], f"[{config.label}] {got!r}"
        for i, ch in enumerate(channels):
            r.spublish(ch, f"m{i}")
        received = [_next(p, sharded=True) for _ in channels]
        assert None not in received, f"[{config.label}] {received!r}"
        assert sorted((m["type"], m["channel"], m["data"]) for m in received) == [
            ("smessage", _b(ch), _b(f"m{i}")) for i, ch in enumerate(channels)
        ]
        assert sorted(r.pubsub_shardchannels(keys.k("shard:*"))) == sorted(_b(ch) for ch in channels)
        assert r.pubsub_shardnumsub(channels[0], keys.k("none")) == [(_b(channels[0]), 1), (_b(keys.k("none")), 0)]
        p.sunsubscribe(channels[0])
        assert _confirmations(p, 1, sharded=True) == [("sunsubscribe", _b(channels[0]), 2)]
        r.spublish(channels[0], "dropped")
        r.spublish(channels[1], "kept")
        msg = _next(p, sharded=True)
        assert msg is not None and (msg["channel"], msg["data"]) == (_b(channels[1]), b"kept"), f"{msg!r}"
    finally:
        p.close()


# ------------------------------------------------- raw protocol, both modes


@pytest.fixture
def plain_client():
    """A RESP2 redis.Redis on the server under test, for setup and checks
    around the raw-socket tests (which run once, not per configuration)."""
    client = proxy_client(RESP2)
    yield client
    client.close()


def _raw_keys(request):
    return Keys("sg", "raw", request.node.originalname or request.node.name)


def test_resp2_subscribed_state_allows_only_pubsub_commands(request, plain_client):
    """RESP2, subscribed: GET (or SET) is refused with Redis's own words,
    PING answers ["pong", <arg or "">], (P|S)SUBSCRIBE still work; leaving
    every subscription (or RESET) makes normal commands work again."""
    r = plain_client
    keys = _raw_keys(request)
    ch, pattern, shard, key = keys.k("ch"), keys.k("pat:*"), keys.k("shard"), keys.k("key")
    r.set(key, "value")
    refusal = (
        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
        "are allowed in this context"
    )
    with raw_client(2) as raw:
        assert raw.call("SUBSCRIBE", ch) == [b"subscribe", _b(ch), 1]
        assert raw.call("GET", key) == RespError(refusal.format("get"))
        assert raw.call("SET", key, "x") == RespError(refusal.format("set"))
        assert raw.call("PING") == [b"pong", b""]
        assert raw.call("PING", "hello") == [b"pong", b"hello"]
        assert raw.call("PSUBSCRIBE", pattern) == [b"psubscribe", _b(pattern), 2]
        assert raw.call("SSUBSCRIBE", shard) == [b"ssubscribe", _b(shard), 1]
        assert raw.call("SUNSUBSCRIBE", shard) == [b"sunsubscribe", _b(shard), 0]
        assert raw.call("UNSUBSCRIBE") == [b"unsubscribe", _b(ch), 1]
        assert raw.call("GET", key) == RespError(refusal.format("get")), "still subscribed to a pattern"
        assert raw.call("PUNSUBSCRIBE") == [b"punsubscribe", _b(pattern), 0]
        assert raw.call("GET", key) == b"value", "no subscription left: normal commands again"
        assert raw.call("PING") == "PONG"

        assert raw.call("SUBSCRIBE", ch) == [b"subscribe", _b(ch), 1]
        assert raw.call("RESET") == "RESET"
        assert raw.call("GET", key) == b"value", "RESET leaves the subscribed state"
    assert r.get(key) == b"value", "the refused SET did not run"


def test_resp3_subscribed_client_runs_commands_between_pushes(request, plain_client):
    """RESP3, subscribed: confirmations and messages are push frames; GET,
    SET and PING run as usual and their replies are plain replies, with the
    pushed messages interleaved between them."""
    r = plain_client
    keys = _raw_keys(request)
    ch, key = keys.k("ch"), keys.k("key")
    r.set(key, "value")
    with raw_client(3) as raw:
        sub = raw.call("SUBSCRIBE", ch)
        assert isinstance(sub, Push) and sub == [b"subscribe", _b(ch), 1], f"{sub!r}"
        got = raw.call("GET", key)
        assert got == b"value" and not isinstance(got, Push)
        assert raw.call("PING") == "PONG"

        # A message published by another client arrives as a push, before
        # the reply of the next command (nothing else is pending).
        r.publish(ch, "hello")
        push = raw.read()
        assert isinstance(push, Push) and push == [b"message", _b(ch), b"hello"], f"{push!r}"
        assert raw.call("SET", key, "changed") == "OK"
        assert raw.call("GET", key) == b"changed"

        # A push and a reply in flight at once: both arrive, each whole.
        r.publish(ch, "second")
        raw.send("GET", key)
        frames = [raw.read(), raw.read()]
        pushes = [f for f in frames if isinstance(f, Push)]
        replies = [f for f in frames if not isinstance(f, Push)]
        assert pushes == [[b"message", _b(ch), b"second"]] and replies == [b"changed"], f"{frames!r}"

        unsub = raw.call("UNSUBSCRIBE", ch)
        assert isinstance(unsub, Push) and unsub == [b"unsubscribe", _b(ch), 0]
        assert raw.call("UNSUBSCRIBE") == Push([b"unsubscribe", None, 0])
        assert raw.call("GET", key) == b"changed"
    assert r.get(key) == b"changed"


def test_redis_py_pubsub_alongside_commands(config, keys):
    """redis-py's pubsub helper (push frames on RESP3, the redis-py 8
    default): messages arrive through get_message, in publishing order,
    while the same Redis object runs ordinary commands on its other pooled
    connections between the publishes."""
    client = proxy_client(config)
    ch = keys.k("mixed")
    p = client.pubsub()
    try:
        p.subscribe(ch)
        assert _confirmations(p, 1) == [("subscribe", _b(ch), 1)]
        for i in range(20):
            client.set(keys.k(f"v:{i}"), i)
            client.publish(ch, f"m{i}")
            assert client.get(keys.k(f"v:{i}")) == str(i).encode()
        got = [_next(p) for _ in range(20)]
        assert [m["data"] for m in got if m] == [_b(f"m{i}") for i in range(20)], f"[{config.label}] {got!r}"
    finally:
        p.close()
        client.close()

