"""MULTI/EXEC/DISCARD/WATCH/UNWATCH as one Redis server runs them, through
redis-py's transaction pipeline and `transaction()` helper and on a raw
socket (exact replies). Keys of one transaction share a hash tag; through
slotgate, a queued command in another slot gets CROSSSLOT and EXEC then
EXECABORT, and WATCH over two slots is refused (slotgate-only tests)."""

import time

import pytest
import redis

from conftest import proxy_client
from issue4_helpers import CROSSSLOT, EXECABORT, RespError, error_line, raw_client, skip_unless_slotgate


def test_multi_exec_pipeline_returns_every_result(r, config, keys):
    """A transaction pipeline (MULTI ... EXEC) on hash-tagged keys runs every
    command and returns their results in order."""
    t = keys.t
    pipe = r.pipeline(transaction=True)
    pipe.set(t("a"), 1).incrby(t("a"), 41).get(t("a"))
    pipe.rpush(t("l"), "x", "y").lrange(t("l"), 0, -1)
    pipe.mset({t("b"): "B", t("c"): "C"}).mget(t("a"), t("b"), t("c"), t("missing"))
    pipe.exists(t("a"), t("b"), t("missing")).delete(t("b"), t("c"))
    results = pipe.execute()
    assert results == [True, 42, b"42", 2, [b"x", b"y"], True, [b"42", b"B", b"C", None], 2, 2], (
        f"[{config.label}] {results!r}"
    )
    assert r.get(t("a")) == b"42" and r.exists(t("b")) == 0


def test_watch_conflict_with_a_second_client(r, config, keys):
    """WATCH, then a second client changes the watched key: EXEC answers nil
    and nothing queued runs (redis-py raises WatchError); the second client's
    value stays."""
    key, other_key = keys.t("watched"), keys.t("other")
    r.set(key, "start")
    other = proxy_client(config)
    try:
        with r.pipeline() as pipe:
            pipe.watch(key, other_key)
            assert pipe.get(key) == b"start"
            assert other.set(other_key, "by the second client") is True
            pipe.multi()
            pipe.set(key, "from the transaction")
            pipe.incr(keys.t("counter"))
            with pytest.raises(redis.WatchError):
                pipe.execute()
        assert r.get(key) == b"start", f"[{config.label}] the aborted transaction wrote"
        assert r.get(keys.t("counter")) is None
        assert r.get(other_key) == b"by the second client"
    finally:
        other.close()


def test_transaction_helper_retries_after_a_conflict(r, config, keys):
    """redis-py's `transaction()` helper (WATCH, read, MULTI/EXEC, retried on
    WatchError): a second client's write during the first attempt makes it
    retry once, and the final value counts both writers."""
    key = keys.t("balance")
    r.set(key, 100)
    other = proxy_client(config)
    attempts = []

    def debit(pipe):
        balance = int(pipe.get(key))
        attempts.append(balance)
        if len(attempts) == 1:
            other.incrby(key, 50)  # conflicting write while WATCHed
        pipe.multi()
        pipe.set(key, balance - 30)

    try:
        result = r.transaction(debit, key)
    finally:
        other.close()
    assert attempts == [100, 150], f"[{config.label}] attempts saw {attempts}"
    assert result == [True]
    assert r.get(key) == b"120"


def test_watch_without_conflict_and_unwatch(r, config, keys):
    """WATCH with no conflicting write lets EXEC run; UNWATCH forgets the
    watched keys, so a later write by another client does not abort EXEC."""
    key = keys.t("k")
    r.set(key, 1)
    with r.pipeline() as pipe:
        pipe.watch(key)
        value = int(pipe.get(key))
        pipe.multi()
        pipe.set(key, value + 1)
        assert pipe.execute() == [True]
    assert r.get(key) == b"2"

    other = proxy_client(config)
    try:
        with r.pipeline() as pipe:
            pipe.watch(key)
            other.set(key, "changed")
            assert pipe.unwatch() is True
            pipe.multi()
            pipe.append(key, "+tx")
            assert pipe.execute() == [len("changed+tx")], f"[{config.label}] EXEC after UNWATCH"
    finally:
        other.close()
    assert r.get(key) == b"changed+tx"

    # The same on the wire: WATCH, foreign write, UNWATCH, MULTI/EXEC runs.
    with raw_client(config.expected_protocol) as raw:
        assert raw.call("WATCH", key) == "OK"
        r.set(key, "again")
        assert raw.call("UNWATCH") == "OK"
        assert raw.call("MULTI") == "OK"
        assert raw.call("GET", key) == "QUEUED"
        assert raw.call("EXEC") == [b"again"]


def test_watch_conflict_on_the_wire(config, keys):
    """On one connection: WATCH two hash-tagged keys, another client writes
    one, MULTI/SET/EXEC answers a null reply and the SET did not run."""
    a, b = keys.t("a"), keys.t("b")
    with raw_client(config.expected_protocol) as raw, raw_client(config.expected_protocol) as other:
        assert raw.call("WATCH", a, b) == "OK"
        assert other.call("SET", b, "other") == "OK"
        assert raw.call("MULTI") == "OK"
        assert raw.call("SET", a, "tx") == "QUEUED"
        assert raw.call("EXEC") is None, f"[{config.label}] EXEC after a conflict must be nil"
        assert raw.call("GET", a) is None
        # The conflict is over: the next transaction runs.
        assert raw.call("MULTI") == "OK"
        assert raw.call("SET", a, "tx") == "QUEUED"
        assert raw.call("EXEC") == ["OK"]


def test_discard_and_state_errors(config, keys):
    """DISCARD drops what was queued; EXEC/DISCARD without MULTI, nested
    MULTI and WATCH inside MULTI get Redis's errors; a transaction of
    keyless commands runs."""
    key = keys.t("d")
    with raw_client(config.expected_protocol) as raw:
        assert raw.call("MULTI") == "OK"
        assert raw.call("SET", key, "queued") == "QUEUED"
        assert raw.call("INCR", keys.t("n")) == "QUEUED"
        assert raw.call("DISCARD") == "OK"
        assert raw.call("GET", key) is None and raw.call("GET", keys.t("n")) is None
        assert raw.call("EXEC") == RespError("ERR EXEC without MULTI")
        assert raw.call("DISCARD") == RespError("ERR DISCARD without MULTI")

        assert raw.call("MULTI") == "OK"
        assert raw.call("MULTI") == RespError("ERR MULTI calls can not be nested")
        assert raw.call("WATCH", key) == RespError("ERR WATCH inside MULTI is not allowed")
        assert raw.call("PING") == "QUEUED"
        assert raw.call("ECHO", "hi") == "QUEUED"
        assert raw.call("EXEC") == ["PONG", b"hi"], "nested MULTI and WATCH errors do not abort the transaction"
        assert raw.call("PING") == "PONG"


def test_queued_syntax_error_aborts_exec(r, config, keys):
    """A command that fails when queued (wrong arity) gets its error, and
    EXEC answers `EXECABORT Transaction discarded because of previous
    errors.`: nothing queued runs. redis-py raises the queueing error."""
    a, b = keys.t("a"), keys.t("b")
    with raw_client(config.expected_protocol) as raw:
        assert raw.call("MULTI") == "OK"
        assert raw.call("SET", a, "1") == "QUEUED"
        assert raw.call("SET", b) == RespError("ERR wrong number of arguments for 'set' command")
        assert raw.call("INCR", a) == "QUEUED"
        assert raw.call("EXEC") == RespError(EXECABORT)
        assert raw.call("GET", a) is None
        assert raw.call("PING") == "PONG"

    pipe = r.pipeline(transaction=True)
    pipe.set(a, "1")
    pipe.execute_command("SET", b)
    pipe.incr(a)
    with pytest.raises(redis.ResponseError) as error:
        pipe.execute()
    assert "wrong number of arguments for 'set' command" in str(error.value), f"[{config.label}] {error.value}"
    assert r.get(a) is None and r.get(b) is None
    assert r.ping() is True


def test_runtime_error_inside_exec_does_not_stop_the_others(r, config, keys):
    """An error at run time (INCR of a non-integer) is one entry of EXEC's
    result; the commands before and after it still run."""
    s, k = keys.t("s"), keys.t("k")
    r.set(s, "not a number")
    pipe = r.pipeline(transaction=True)
    pipe.set(k, "before").incr(s).append(k, "+after").get(k)
    results = pipe.execute(raise_on_error=False)
    assert results[0] is True and results[2] == len("before+after") and results[3] == b"before+after"
    assert isinstance(results[1], redis.ResponseError), f"[{config.label}] {results!r}"
    assert error_line(results[1]) == "ERR value is not an integer or out of range"

    pipe = r.pipeline(transaction=True)
    pipe.set(k, "x").incr(s).set(keys.t("z"), "z")
    with pytest.raises(redis.ResponseError):
        pipe.execute()
    assert r.get(k) == b"x" and r.get(keys.t("z")) == b"z", "EXEC ran every command around the error"

    with raw_client(config.expected_protocol) as raw:
        assert raw.call("MULTI") == "OK"
        assert raw.call("INCR", s) == "QUEUED"
        assert raw.call("SET", k, "y") == "QUEUED"
        assert raw.call("EXEC") == [RespError("ERR value is not an integer or out of range"), "OK"]


def test_disconnect_mid_transaction_leaves_nothing(r, config, keys):
    """A client that sends MULTI and SET, then closes its socket without
    EXEC: the SET never runs, and nothing is left queued for anyone else (a
    new connection's EXEC is 'EXEC without MULTI')."""
    key = keys.t("cut")
    raw = raw_client(config.expected_protocol)
    assert raw.call("MULTI") == "OK"
    assert raw.call("SET", key, "never") == "QUEUED"
    assert raw.call("INCR", keys.t("n")) == "QUEUED"
    raw.close()
    time.sleep(0.2)  # let the server (or slotgate) notice the close
    assert r.get(key) is None and r.get(keys.t("n")) is None
    with raw_client(config.expected_protocol) as again:
        assert again.call("EXEC") == RespError("ERR EXEC without MULTI")
        assert again.call("SET", key, "later") == "OK"
    assert r.get(key) == b"later" and r.get(keys.t("n")) is None


# ------------------------------------------------------------ slotgate only


def test_queued_command_in_another_slot_aborts_exec(r, config, keys):
    """Through slotgate only: after MULTI on one slot, a command on a key of
    another slot gets CROSSSLOT and EXEC answers EXECABORT, as a cluster
    node does; nothing of the transaction runs."""
    skip_unless_slotgate(r, "CROSSSLOT in MULTI")
    a, b = keys.apart("tx")
    with raw_client(config.expected_protocol) as raw:
        assert raw.call("MULTI") == "OK"
        assert raw.call("SET", a, "1") == "QUEUED"
        assert raw.call("SET", b, "2") == RespError(CROSSSLOT)
        assert raw.call("INCR", a) == "QUEUED"
        assert raw.call("EXEC") == RespError(EXECABORT)
        assert raw.call("PING") == "PONG"
    assert r.exists(a, b) == 0

    pipe = r.pipeline(transaction=True)
    pipe.set(a, "1").set(b, "2")
    with pytest.raises(redis.ResponseError) as error:
        pipe.execute()
    # redis-py raises the queueing error (annotated with its place), not
    # the EXECABORT that follows it.
    assert isinstance(error.value, redis.exceptions.ClusterCrossSlotError), f"[{config.label}] {error.value!r}"
    assert "Keys in request don't hash to the same slot" in str(error.value)
    assert r.exists(a, b) == 0


def test_watch_on_two_slots_is_refused(r, config, keys):
    """Through slotgate only: WATCH over keys of two slots is refused with
    CROSSSLOT; the connection keeps working and a WATCH on one slot after it
    works."""
    skip_unless_slotgate(r, "CROSSSLOT for WATCH")
    a, b = keys.apart("w")
    with raw_client(config.expected_protocol) as raw:
        assert raw.call("WATCH", a, b) == RespError(CROSSSLOT)
        assert raw.call("PING") == "PONG"
        assert raw.call("WATCH", a) == "OK"
        assert raw.call("MULTI") == "OK"
        assert raw.call("SET", a, "1") == "QUEUED"
        assert raw.call("EXEC") == ["OK"]
    with pytest.raises(redis.ResponseError) as error:
        with r.pipeline() as pipe:
            pipe.watch(a, b)
    assert error_line(error.value) == CROSSSLOT
