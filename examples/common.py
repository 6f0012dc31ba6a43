"""What the examples share: where slotgate is, checked steps, cleanup, and a clear exit.

Every step an example prints is checked: a result that differs from what Redis would answer
stops the example with a non-zero exit status, as does a server that cannot be reached.
"""

import os
import sys
from contextlib import contextmanager, suppress

import redis

from slots import key_slot

SLOTGATE_HOST = os.environ.get("REDIS_HOST", "localhost")
SLOTGATE_PORT = int(os.environ.get("REDIS_PORT", "6380"))
SLOTGATE = f"slotgate at {SLOTGATE_HOST}:{SLOTGATE_PORT}"
START_HINT = "start it with ./scripts/redis-cluster.sh start"

# Long enough for a loaded laptop, short enough that a hung server shows as an error.
TIMEOUT_SECONDS = 10


class Mismatch(Exception):
    """A result that is not what Redis answers: the example has found a bug."""


def expect(what, got, want):
    """Prints one step and its result; raises Mismatch if the result is not `want`."""
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, expected {want!r}")
    print(f"  {what}: {got!r}")


def expect_at_least(what, got, least):
    """Prints one step and its result; raises Mismatch if the result is below `least`."""
    if got < least:
        raise Mismatch(f"{what}: got {got!r}, expected at least {least!r}")
    print(f"  {what}: {got!r}")


# Keys whose slots the examples check against the server: plain keys, the guide's hash tag,
# and the corners of the rule (an empty tag hashes the whole key; only the first tag counts).
SLOT_EXAMPLES = [
    "user:1001",
    "{user:1001}:profile",
    "{user:1001}:settings",
    "{user:1001}:sessions",
    "foo",
    "{}foo",
    "foo{}{bar}",
    "{{bar}}",
    "a{b}c{d}",
]


def check_key_slots(cluster_keyslot):
    """Checks key_slot against `cluster_keyslot(key)`, the server's CLUSTER KEYSLOT."""
    for key in SLOT_EXAMPLES:
        expect(f"slot of {key!r}, here and by CLUSTER KEYSLOT", key_slot(key), cluster_keyslot(key))


def slotgate_client():
    """A plain redis.Redis on slotgate, built as any single-server application builds it."""
    return redis.Redis(
        host=SLOTGATE_HOST,
        port=SLOTGATE_PORT,
        decode_responses=True,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
    )


def delete_prefix(client, prefix):
    """Deletes every key that starts with `prefix`; returns how many there were."""
    keys = set(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


@contextmanager
def cleaned_up(client, prefix):
    """Deletes the keys under `prefix` before the block (an interrupted run's) and after it.

    When the block fails, that failure is the one reported, even if cleaning up fails too.
    """
    delete_prefix(client, prefix)
    try:
        yield
    except BaseException:
        with suppress(redis.RedisError):
            delete_prefix(client, prefix)
        raise
    print(f"Cleanup: deleted {delete_prefix(client, prefix)} keys named {prefix}*")


def run(main, server):
    """Runs `main()` and exits: 0 when every check passed, 1 with the reason otherwise."""
    try:
        main()
    except (redis.ConnectionError, redis.TimeoutError) as error:
        sys.exit(f"cannot reach {server}: {START_HINT} ({error})")
    except Mismatch as error:
        sys.exit(f"FAILED: {error}")
    print("All checks passed.")
