"""What slotgate does not run (yet: blocking commands, pub/sub,
transactions; for good: administrative commands) is refused
with `ERR slotgate cannot run '<cmd>': <reason>`: a ResponseError, never a
hang or a dropped connection, and the same client keeps working."""

import contextlib
import time

import pytest
import redis

from conftest import proxy_client

def multi_then_discard(r, k):
    """MULTI is refused; DISCARD ends the refused transaction (see below)."""
    try:
        r.execute_command("MULTI")
    finally:
        with contextlib.suppress(redis.ResponseError):
            r.execute_command("DISCARD")


# (id, the call, the command name slotgate must name, words of the reason).
# Blocking calls use a 5 s timeout: were one forwarded, it would come back
# after 5 s with None instead of an error, and fail the time check below.
REFUSED = [
    ("blpop", lambda r, k: r.blpop(k("list"), 5), "blpop", "blocking"),
    ("brpop", lambda r, k: r.brpop([k("list")], 5), "brpop", "blocking"),
    ("blmove", lambda r, k: r.blmove(k("list"), k("list"), 5), "blmove", "blocking"),
    ("bzpopmin", lambda r, k: r.bzpopmin(k("zset"), 5), "bzpopmin", "blocking"),
    ("xread-block", lambda r, k: r.xread({k("stream"): "$"}, block=5000), "xread", "blocking"),
    ("subscribe", lambda r, k: r.execute_command("SUBSCRIBE", "ch"), "subscribe", "pub/sub"),
    ("psubscribe", lambda r, k: r.execute_command("PSUBSCRIBE", "ch*"), "psubscribe", "pub/sub"),
    ("multi", multi_then_discard, "multi", "transactions"),
    ("watch", lambda r, k: r.execute_command("WATCH", k("w")), "watch", "transactions"),
    ("wait", lambda r, k: r.execute_command("WAIT", 1, 5000), "wait", "blocking"),
    ("client-list", lambda r, k: r.client_list(), "client|list", "CLIENT subcommand"),
    ("cluster-nodes", lambda r, k: r.execute_command("CLUSTER", "NODES"), "cluster|nodes", "CLUSTER commands"),
    ("config-set", lambda r, k: r.execute_command("CONFIG", "SET", "maxmemory", "0"), "config|set", "administrative"),
    ("debug", lambda r, k: r.execute_command("DEBUG", "SLEEP", "0"), "debug", "administrative"),
]


@pytest.mark.parametrize("call, name, reason", [x[1:] for x in REFUSED], ids=[x[0] for x in REFUSED])
def test_refused_command(r, config, keys, call, name, reason):
    start = time.monotonic()
    with pytest.raises(redis.ResponseError) as error:
        call(r, keys.k)
    elapsed = time.monotonic() - start
    message = str(error.value)
    assert "slotgate cannot run" in message, f"[{config.label}] {name}: not slotgate's refusal: {message!r}"
    assert elapsed < 2, f"[{config.label}] the refusal of {name} took {elapsed:.1f} s: it must not wait"
    assert f"'{name}'" in message, f"[{config.label}] the error should name {name!r}: {message!r}"
    assert reason in message, f"[{config.label}] the reason should mention {reason!r}: {message!r}"
    assert r.ping() is True, f"[{config.label}] the client does not work after the {name} refusal"
    key = keys.k("after")
    assert r.set(key, "still fine") is True and r.get(key) == b"still fine"


def test_refusals_in_a_row_keep_the_connection(config, keys):
    """One dedicated connection: each refusal is one error reply, so the
    replies that follow stay paired with their commands."""
    client = proxy_client(config, single_connection_client=True)
    try:
        for i, (_, call, name, _) in enumerate(REFUSED):
            with pytest.raises(redis.ResponseError, match="slotgate cannot run"):
                call(client, keys.k)
            assert client.echo(f"after-{i}") == f"after-{i}".encode(), f"[{config.label}] out of step after {name}"
    finally:
        client.close()


def test_non_blocking_stream_reads_are_not_mistaken_for_blocking(r, config, keys):
    """XREAD and XREADGROUP are refused only with BLOCK; a group and a
    consumer named "block" are not the option."""
    stream = keys.k("stream")
    r.xadd(stream, {"f": "v"}, id="1-0")
    assert r.xread({stream: "0"}, count=10) not in (None, [], {}), f"[{config.label}] XREAD COUNT 10"
    r.xgroup_create(stream, "block", id="0")
    got = r.xreadgroup("block", "block", {stream: ">"}, count=1)
    assert got not in (None, [], {}), f"[{config.label}] XREADGROUP GROUP block block: {got!r}"
    with pytest.raises(redis.ResponseError, match="blocking"):
        r.xreadgroup("block", "block", {stream: ">"}, count=1, block=5000)
    assert r.ping() is True


def test_nothing_queued_after_a_refused_multi_runs(config, keys):
    """Until transactions are supported, slotgate refuses MULTI and every
    command after it up to EXEC or DISCARD, so no part of the would-be
    transaction runs on its own; EXEC, DISCARD and RESET end that state."""
    client = proxy_client(config, single_connection_client=True)
    key = keys.k("queued")
    try:
        for end in ("EXEC", "DISCARD", "RESET"):
            with pytest.raises(redis.ResponseError, match="transactions"):
                client.execute_command("MULTI")
            with pytest.raises(redis.ResponseError, match="follows a MULTI that was refused"):
                client.execute_command("SET", key, end)
            with pytest.raises(redis.ResponseError, match="follows a MULTI that was refused"):
                client.execute_command("INCR", key)
            if end == "RESET":
                assert client.execute_command("RESET") in (b"RESET", "RESET")
                # RESET returns the connection to RESP2, as Redis does; a
                # RESP3 client says HELLO again (redis-py would otherwise
                # wait on RESP2 nulls, against Redis itself too).
                if config.expected_protocol == 3:
                    client.execute_command("HELLO", 3)
            else:
                with pytest.raises(redis.ResponseError, match="transactions"):
                    client.execute_command(end)
            assert client.get(key) is None, f"[{config.label}] a command queued after MULTI ran ({end})"
        assert client.set(key, "after") is True
    finally:
        client.close()
