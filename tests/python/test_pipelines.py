"""Pipelines: many commands for many slots in one round trip come back in
order, errors in their place; redis-py's default (transactional) pipeline
runs as one transaction when its keys share a slot."""

import pytest
import redis
from redis.crc import key_slot


def test_pipeline_of_1000_mixed_commands_across_slots(r, config, keys):
    groups = 200  # 5 commands each
    pipe = r.pipeline(transaction=False)
    expected, names = [], []
    for i in range(groups):
        counter, lst = keys.k(f"counter:{i}"), keys.k(f"list:{i}")
        pipe.set(counter, i)
        expected.append(True)
        pipe.incrby(counter, 1000)
        expected.append(1000 + i)
        pipe.echo(f"echo-{i}")  # answered by slotgate itself, between node replies
        expected.append(f"echo-{i}".encode())
        pipe.rpush(lst, f"a{i}", f"b{i}")
        expected.append(2)
        pipe.lrange(lst, 0, -1)
        expected.append([f"a{i}".encode(), f"b{i}".encode()])
        names += [f"SET {counter}", f"INCRBY {counter}", f"ECHO echo-{i}", f"RPUSH {lst}", f"LRANGE {lst}"]
    assert len(pipe) == 1000
    slots = {key_slot(keys.k(f"counter:{i}").encode()) for i in range(groups)}
    slots |= {key_slot(keys.k(f"list:{i}").encode()) for i in range(groups)}
    assert len(slots) > 300, f"the keys should spread over many slots, got {len(slots)}"

    results = pipe.execute()

    assert len(results) == len(expected), f"[{config.label}] {len(results)} replies for {len(expected)} commands"
    for i, (got, want) in enumerate(zip(results, expected)):
        assert got == want, f"[{config.label}] reply {i} ({names[i]}) out of order or wrong: got {got!r}, expected {want!r}"
    # The pipeline really wrote: read back a few keys one by one.
    assert r.get(keys.k("counter:0")) == b"1000"
    assert r.get(keys.k(f"counter:{groups - 1}")) == str(1000 + groups - 1).encode()


def test_pipeline_larger_than_the_in_flight_limit(r, config, keys):
    """25,000 commands in one pipeline: more than slotgate keeps in flight
    per client (10,000 by default), so it must pause reading, not drop."""
    n = 25_000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        if i % 2:
            pipe.get(keys.k(f"{i - 1}"))
        else:
            pipe.set(keys.k(f"{i}"), i)
    results = pipe.execute()
    expected = [str(i - 1).encode() if i % 2 else True for i in range(n)]
    assert len(results) == n, f"[{config.label}] {len(results)} replies for {n} commands"
    wrong = [i for i in range(n) if results[i] != expected[i]]
    assert not wrong, f"[{config.label}] {len(wrong)} wrong replies, first at {wrong[0]}: {results[wrong[0]]!r}"


def test_pipeline_keeps_errors_in_their_place(r, config, keys):
    text, ok = keys.k("text"), keys.k("ok")
    a, b = keys.apart("ab")
    pipe = r.pipeline(transaction=False)
    pipe.set(text, "not a number")
    pipe.incr(text)  # node error
    pipe.config_set("maxmemory", "0")  # refused by slotgate
    pipe.sinter(a, b)  # CROSSSLOT (different slots)
    pipe.execute_command("NOSUCHCOMMAND")  # unknown
    pipe.set(ok, "yes")
    pipe.get(ok)
    pipe.ping()
    results = pipe.execute(raise_on_error=False)

    assert results[0] is True, results
    assert isinstance(results[1], redis.ResponseError) and "not an integer" in str(results[1]), results[1]
    assert isinstance(results[2], redis.ResponseError) and "slotgate cannot run" in str(results[2]), results[2]
    # redis-py turns the "CROSSSLOT" code into ClusterCrossSlotError and drops it from the text.
    assert isinstance(results[3], redis.exceptions.ClusterCrossSlotError), repr(results[3])
    assert "hash to the same slot" in str(results[3]), str(results[3])
    assert isinstance(results[4], redis.ResponseError) and "unknown command" in str(results[4]), results[4]
    assert results[5:] == [True, b"yes", True], f"[{config.label}] replies after the errors: {results[5:]!r}"

    pipe = r.pipeline(transaction=False)
    pipe.set(ok, "again").incr(text).get(ok)
    with pytest.raises(redis.ResponseError, match="not an integer"):
        pipe.execute()
    assert r.get(ok) == b"again"


def test_pipelines_interleave_with_plain_commands(r, keys):
    for round_ in range(20):
        pipe = r.pipeline(transaction=False)
        for i in range(10):
            pipe.set(keys.k(f"{round_}:{i}"), f"{round_}-{i}")
        pipe.mget(keys.t("x"), keys.t("y"))
        assert pipe.execute() == [True] * 10 + [[None, None]]
        assert r.get(keys.k(f"{round_}:9")) == f"{round_}-9".encode()


def test_transaction_pipeline_runs_on_one_slot(r, config, keys):
    """redis-py's default pipeline wraps the commands in MULTI/EXEC: on keys
    of one slot it runs as one transaction (test_transactions.py has more)."""
    a, b = keys.t("a"), keys.t("b")
    pipe = r.pipeline()  # transaction=True is redis-py's default
    pipe.set(a, "1").incr(a).mget(a, b)
    assert pipe.execute() == [True, 2, [b"2", None]], f"[{config.label}]"
    assert r.ping() is True
