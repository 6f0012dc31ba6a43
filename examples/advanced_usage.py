"""Advanced usage through slotgate: pipelines, hash tags, transactions, WATCH and pub/sub.

A plain redis.Redis on the setup guide's connection pool settings, pointed at slotgate: a
pipeline of 1,000 SETs over many slots; the guide's {user:1001} hash tag keeping related keys
in one slot, which multi-key commands such as MSETNX and transactions need; MULTI/EXEC;
optimistic locking with WATCH and a retry loop, by four clients at once; and pub/sub. Every
step is checked: a wrong answer exits non-zero.

Run it from the repository's top folder:

    ./scripts/redis-cluster.sh start
    python examples/advanced_usage.py

REDIS_HOST and REDIS_PORT say where slotgate listens (default localhost:6380).
"""

import time
from concurrent.futures import ThreadPoolExecutor

import redis

from common import (
    SLOTGATE,
    SLOTGATE_HOST,
    SLOTGATE_PORT,
    TIMEOUT_SECONDS,
    Mismatch,
    cleaned_up,
    expect,
    expect_at_least,
    run,
)
from slots import key_slot

PREFIX = "example:advanced:"
# The guide's hash tag: the slot is that of "user:1001", whatever comes before or after it.
USER = f"{PREFIX}{{user:1001}}"
# Two keys without a tag, in different slots.
APART = (f"{PREFIX}profile:1001", f"{PREFIX}settings:1001")


def connection_pool():
    """The guide's pool settings, pointed at slotgate instead of at one node."""
    return redis.ConnectionPool(
        host=SLOTGATE_HOST,
        port=SLOTGATE_PORT,
        max_connections=20,
        retry_on_timeout=True,
        health_check_interval=30,
        decode_responses=True,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
    )


def pipeline(r):
    """1,000 SETs sent at once; slotgate routes each and keeps the replies in order."""
    keys = [f"{PREFIX}key:{i}" for i in range(1000)]
    values = [f"value:{i}" for i in range(1000)]
    slots = {key_slot(key) for key in keys}
    print(f"Pipeline: {len(keys)} SETs over {len(slots)} slots, sent in one round trip")
    started = time.perf_counter()
    # transaction=False: redis-py's default pipeline() wraps the commands in MULTI/EXEC,
    # which needs every key in one slot (see transaction() below).
    pipe = r.pipeline(transaction=False)
    for key, value in zip(keys, values):
        pipe.set(key, value)
    replies = pipe.execute()
    print(f"  took {(time.perf_counter() - started) * 1000:.0f} ms")
    expect("SETs answered OK", replies.count(True), len(keys))
    matching = sum(got == want for got, want in zip(r.mget(keys), values))
    expect("values read back right by one MGET", matching, len(keys))


def hash_tags(r):
    """Keys sharing a hash tag share a slot, so commands that need one slot work on them."""
    print("Hash tags: the guide's {user:1001} keys in one slot")
    related = {f"{USER}:profile": "Ada", f"{USER}:settings": "dark", f"{USER}:sessions": "2"}
    expect("their slots", {key_slot(key) for key in related}, {key_slot("user:1001")})
    expect("MSETNX of the three (all or none)", r.msetnx(related), True)
    expect("MGET", r.mget(list(related)), list(related.values()))
    print(f"  without a tag: slots {[key_slot(key) for key in APART]} for {list(APART)}")
    try:
        r.msetnx({key: "x" for key in APART})
    except redis.exceptions.ClusterCrossSlotError as error:
        print(f"  MSETNX of the two gets CROSSSLOT, as on a cluster node: {error}")
    else:
        raise Mismatch("MSETNX over two slots succeeded: expected CROSSSLOT")


def transaction(r):
    """MULTI/EXEC on hash-tagged keys runs on their master, all or nothing."""
    print("MULTI/EXEC on {user:1001} keys")
    pipe = r.pipeline(transaction=True)
    pipe.incr(f"{USER}:logins")
    pipe.set(f"{USER}:last_login", "2025-06-01T12:00:00Z")
    pipe.expire(f"{USER}:sessions", 3600)
    pipe.mget(f"{USER}:logins", f"{USER}:last_login")
    expect("EXEC", pipe.execute(), [1, True, True, ["1", "2025-06-01T12:00:00Z"]])
    pipe = r.pipeline(transaction=True)
    for key in APART:
        pipe.set(key, "x")
    try:
        pipe.execute()
    except redis.exceptions.ResponseError as error:
        print(f"  a transaction over two slots is refused: {error}")
    else:
        raise Mismatch("a transaction over two slots succeeded: expected CROSSSLOT")
    expect("keys it would have written", r.exists(*APART), 0)


def transfer(r, source, target, amount):
    """Moves `amount` from `source` to `target` if the balance allows it; returns how many
    times a concurrent change made it start over."""
    retries = 0
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch(source, target)  # EXEC fails if either changes from here on
                if int(pipe.get(source)) < amount:
                    return retries
                pipe.multi()
                pipe.decrby(source, amount)
                pipe.incrby(target, amount)
                pipe.execute()
                return retries
            except redis.WatchError:
                retries += 1  # another client got there first: read the balance again


def optimistic_locking(r, clients=4, transfers=30):
    """Concurrent read-check-write with WATCH: no balance goes below zero, nothing is lost."""
    alice, bob = f"{PREFIX}{{bank}}:alice", f"{PREFIX}{{bank}}:bob"
    print(f"WATCH: {clients} clients at once each try {transfers} transfers of 1 from alice to bob")
    expect("MSET alice 100 bob 0", r.mset({alice: 100, bob: 0}), True)

    def client():
        return sum(transfer(r, alice, bob, 1) for _ in range(transfers))

    with ThreadPoolExecutor(max_workers=clients) as workers:
        futures = [workers.submit(client) for _ in range(clients)]
        retries = sum(future.result() for future in futures)
    expect("balances of alice and bob", r.mget(alice, bob), ["0", "100"])
    print(f"  conflicts caught by WATCH and retried: {retries}")


def next_message(subscriber):
    """The next pub/sub message, or Mismatch if none comes in time."""
    message = subscriber.get_message(timeout=TIMEOUT_SECONDS)
    if message is None:
        raise Mismatch(f"no pub/sub message within {TIMEOUT_SECONDS} s")
    return message


def pubsub(r):
    """A subscriber receives, in order, what PUBLISH sends."""
    channel = f"{PREFIX}news"
    sent = ["cluster up", "slot 42 moved", "all good"]
    print(f"Pub/sub on {channel}")
    with r.pubsub() as subscriber:
        subscriber.subscribe(channel)
        expect("SUBSCRIBE confirmed", next_message(subscriber)["type"], "subscribe")
        for text in sent:
            expect_at_least(f"PUBLISH {text!r}: receivers", r.publish(channel, text), 1)
        expect("messages received", [next_message(subscriber)["data"] for _ in sent], sent)


def main():
    pool = connection_pool()
    r = redis.Redis(connection_pool=pool)
    print(f"Connected to {SLOTGATE} through a pool of up to {pool.max_connections} connections: "
          f"PING -> {r.ping()}")
    with cleaned_up(r, PREFIX):
        pipeline(r)
        hash_tags(r)
        transaction(r)
        optimistic_locking(r)
        pubsub(r)


if __name__ == "__main__":
    run(main, SLOTGATE)
