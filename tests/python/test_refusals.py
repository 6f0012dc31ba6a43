"""What slotgate does not run (CLIENT TRACKING and PAUSE,
administrative commands) is refused
with `ERR slotgate cannot run '<cmd>': <reason>`: a ResponseError, never a
hang or a dropped connection, and the same client keeps working."""

import time

import pytest
import redis

from conftest import proxy_client

# (id, the call, the command name slotgate must name, words of the reason).
# Blocking calls use a 5 s timeout: were one forwarded, it would come back
# after 5 s with None instead of an error, and fail the time check below.
REFUSED = [
    ("client-pause", lambda r, k: r.execute_command("CLIENT", "PAUSE", 10), "client|pause", "CLIENT subcommand"),
    ("client-tracking", lambda r, k: r.execute_command("CLIENT", "TRACKING", "on"), "client|tracking", "client-side caching"),
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
    """XREAD and XREADGROUP block only with BLOCK; a group and a consumer
    named "block" are not the option."""
    stream = keys.k("stream")
    r.xadd(stream, {"f": "v"}, id="1-0")
    assert r.xread({stream: "0"}, count=10) not in (None, [], {}), f"[{config.label}] XREAD COUNT 10"
    r.xgroup_create(stream, "block", id="0")
    got = r.xreadgroup("block", "block", {stream: ">"}, count=1)
    assert got not in (None, [], {}), f"[{config.label}] XREADGROUP GROUP block block: {got!r}"
    assert r.ping() is True
