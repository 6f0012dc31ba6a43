"""Large values, binary-safe keys and values, and one client shared by
many threads (redis-py's connection pool)."""

import random
import threading
from concurrent.futures import ThreadPoolExecutor

from conftest import RESP2, RESP3, Keys, proxy_client

FIVE_MB = 5 * 1024 * 1024


def test_large_value_round_trip(r, config, keys):
    value = random.Random(42).randbytes(FIVE_MB)
    key = keys.k("large")
    assert r.set(key, value) is True
    got = r.get(key)
    assert got is not None and len(got) == len(value), f"[{config.label}] got {None if got is None else len(got)} bytes"
    assert got == value, f"[{config.label}] the 5 MB value came back altered"
    assert r.strlen(key) == FIVE_MB
    # Big replies in the middle of a pipeline keep their neighbours intact.
    pipe = r.pipeline(transaction=False)
    pipe.echo("before").get(key).hset(keys.k("h"), "big", value).hget(keys.k("h"), "big").echo("after")
    results = pipe.execute()
    assert results[0] == b"before" and results[4] == b"after", f"[{config.label}] {results[0]!r} {results[4]!r}"
    assert results[1] == value and results[3] == value, f"[{config.label}] large values altered in a pipeline"
    assert r.delete(key) == 1


def test_binary_safe_keys_and_values(r, config, keys):
    base = keys.k("bin").encode()
    key = base + b"\x00\xff\r\n key with \x00 bytes \xfe"
    value = b"\x00\xff\r\n$3\r\nSET\r\n*1\r\n" + bytes(range(256))
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.exists(key) == 1 and r.get(base) is None, "the key must not be cut at \\x00 or \\r\\n"
    assert r.hset(key + b":h", b"\x00field\xff", value) == 1
    assert r.hgetall(key + b":h") == {b"\x00field\xff": value}
    assert r.rpush(key + b":l", b"\r\n", b"\x00", b"") == 3
    assert r.lrange(key + b":l", 0, -1) == [b"\r\n", b"\x00", b""]
    # A hash tag made of binary bytes routes both keys to one slot.
    tag = b"{" + base + b"\x00\xff}"
    assert r.mset({tag + b":a": b"\xff", tag + b":b": b"\x00"}) is True
    assert r.mget(tag + b":a", tag + b":b") == [b"\xff", b"\x00"]
    assert r.echo(value) == value
    empty = keys.k("empty")
    assert r.set(empty, b"") is True and r.get(empty) == b""


def test_connection_pool_under_threads(config, keys):
    """20 threads x 200 SET/GET on one redis.Redis: its pool opens a
    connection per thread; every reply must belong to its own request."""
    client = proxy_client(config)
    threads, rounds = 20, 200
    errors = []
    barrier = threading.Barrier(threads)

    def worker(t):
        barrier.wait()
        for i in range(rounds):
            key = keys.k(f"t{t}:{i % 50}")
            value = f"thread {t} round {i}".encode()
            if client.set(key, value) is not True:
                errors.append(f"SET {key} failed")
            got = client.get(key)
            if got != value:
                errors.append(f"thread {t} round {i}: GET {key} returned {got!r}, expected {value!r}")
        return t

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            done = list(pool.map(worker, range(threads)))
        assert done == list(range(threads))
        assert not errors, f"[{config.label}] {len(errors)} wrong replies, first: {errors[:5]}"
        # Final state, all at once, through one pipeline.
        pipe = client.pipeline(transaction=False)
        for t in range(threads):
            pipe.get(keys.k(f"t{t}:{(rounds - 1) % 50}"))
        assert pipe.execute() == [f"thread {t} round {rounds - 1}".encode() for t in range(threads)]
    finally:
        client.close()


def test_resp2_and_resp3_clients_at_once():
    """Dedicated RESP2 and RESP3 connections, interleaved: slotgate answers
    each in its own protocol (HGETALL is a map only on RESP3)."""
    keys = Keys("sg", "mixed", "test_resp2_and_resp3_clients_at_once")
    clients = [proxy_client(RESP2 if i % 2 else RESP3, single_connection_client=True) for i in range(10)]
    try:
        for i, c in enumerate(clients):
            c.hset(keys.k(f"h{i}"), mapping={"i": str(i)})
        for i, c in enumerate(clients):
            c.connection.send_command("HGETALL", keys.k(f"h{i}"))
            got = c.connection.read_response()
            if i % 2:
                assert got == [b"i", str(i).encode()], f"RESP2 client {i}: {got!r}"
            else:
                assert got == {b"i": str(i).encode()}, f"RESP3 client {i}: {got!r}"
    finally:
        for c in clients:
            c.close()
