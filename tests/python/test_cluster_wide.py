"""Commands about the whole keyspace or the whole server, as one Redis
server answers them: KEYS, SCAN, DBSIZE, RANDOMKEY, INFO, LASTSAVE,
CONFIG GET, MEMORY USAGE, scripts and functions (usable on every slot once
loaded). Through slotgate, what would reconfigure or stop one node of the
cluster is refused with an `ERR` naming the command (slotgate-only tests),
and CLUSTER KEYSLOT / COUNTKEYSINSLOT / INFO are answered.

Nothing here flushes the database: other tests share it. The FLUSHDB test
runs only with SLOTGATE_DESTRUCTIVE=1."""

import datetime
import hashlib
import os

import pytest
import redis
from redis.crc import key_slot

from conftest import RUN, proxy_client
from issue4_helpers import error_line, raw_client, skip_unless_slotgate, slots_of, text


def _keys_in_distinct_slots(keys, name, n):
    """`n` plain keys of this test, each in a slot of its own."""
    found, seen = [], set()
    i = 0
    while len(found) < n:
        key = keys.k(f"{name}:{i}")
        slot = key_slot(key.encode())
        if slot not in seen:
            seen.add(slot)
            found.append(key)
        i += 1
    return found


# ------------------------------------------------------------ keyspace walks


def test_keys_pattern_returns_exactly_this_tests_keys(r, config, keys):
    """KEYS <pattern> returns every matching key once, whatever its slot, and
    nothing else."""
    names = [keys.k(f"key:{i}") for i in range(300)]
    assert len(slots_of(names)) > 200
    r.mset({n: i for i, n in enumerate(names)})
    r.set(keys.t("tagged"), "not matched: starts with '{'")
    got = r.keys(keys.k("*"))
    assert len(got) == len(names), f"[{config.label}] KEYS returned {len(got)} keys for {len(names)}"
    assert sorted(got) == sorted(n.encode() for n in names), f"[{config.label}] KEYS returned other keys"
    assert sorted(r.keys(keys.k("key:1?"))) == sorted(keys.k(f"key:{i}").encode() for i in range(10, 20))
    assert r.keys(keys.k("nothing-*")) == []
    r.delete(*names)


def _scan_all(r, **kwargs):
    cursor, seen, calls = 0, [], 0
    while True:
        cursor, batch = r.scan(cursor, **kwargs)
        seen.extend(batch)
        calls += 1
        assert calls < 100_000, "SCAN never returned cursor 0"
        if int(cursor) == 0:
            return seen


def test_scan_full_iteration_over_5000_keys(r, config, keys):
    """A full SCAN iteration (cursor loop until 0) returns every key that
    existed throughout, possibly more than once, with MATCH, COUNT and TYPE
    applied as on one server; scan_iter does the same."""
    strings = [keys.k(f"s:{i}") for i in range(4000)]
    hashes = [keys.k(f"h:{i}") for i in range(1000)]
    pipe = r.pipeline(transaction=False)
    for i, name in enumerate(strings):
        pipe.set(name, i)
    for name in hashes:
        pipe.hset(name, "f", "v")
    pipe.execute()
    # CRC16 is linear: counter-suffixed names share slots more than random
    # ones would; thousands of slots still means every master.
    assert len(slots_of(strings + hashes)) > 3000
    everything = {n.encode() for n in strings + hashes}

    seen = _scan_all(r, match=keys.k("*"), count=1000)
    assert set(seen) == everything, (
        f"[{config.label}] SCAN MATCH missed {len(everything - set(seen))} keys, "
        f"returned {len(set(seen) - everything)} unrelated ones"
    )
    only_hashes = _scan_all(r, match=keys.k("*"), count=1000, _type="hash")
    assert set(only_hashes) == {n.encode() for n in hashes}, f"[{config.label}] SCAN TYPE hash"
    only_strings = _scan_all(r, match=keys.k("s:*"), count=1000, _type="string")
    assert set(only_strings) == {n.encode() for n in strings}, f"[{config.label}] SCAN MATCH s:* TYPE string"
    assert _scan_all(r, match=keys.k("*"), count=1000, _type="zset") == []

    iterated = set(r.scan_iter(match=keys.k("h:*"), count=500))
    assert iterated == {n.encode() for n in hashes}, f"[{config.label}] scan_iter"

    # A key that does not match never comes back, whatever the COUNT.
    assert set(_scan_all(r, match=keys.k("s:1?"), count=5000)) == {keys.k(f"s:{i}").encode() for i in range(10, 20)}
    assert r.delete(*strings) == 4000 and r.delete(*hashes) == 1000


def test_dbsize_counts_every_key(r, config, keys):
    """DBSIZE counts the keys of the whole database: writing N new keys in
    many slots makes it grow by exactly N, deleting them brings it back."""
    names = [keys.k(f"n:{i}") for i in range(250)]
    before = r.dbsize()
    assert isinstance(before, int)
    r.mset({n: "x" for n in names})
    assert r.dbsize() - before == 250, f"[{config.label}] DBSIZE grew by {r.dbsize() - before}, expected 250"
    r.delete(*names)
    assert r.dbsize() == before


def test_randomkey_returns_an_existing_key(r, config, keys):
    """RANDOMKEY returns some key that exists when the database has keys."""
    r.mset({keys.k(f"rk:{i}"): i for i in range(20)})
    for _ in range(10):
        key = r.randomkey()
        assert key is not None, f"[{config.label}] RANDOMKEY returned nil with keys present"
        assert isinstance(key, bytes)
        # The key may in principle expire between the two calls, but nothing
        # in this suite uses TTLs that short.
        assert r.exists(key) == 1, f"[{config.label}] RANDOMKEY returned {key!r}, which does not exist"


# ------------------------------------------------------------ server replies


def test_info_looks_like_one_standalone_server(r, config, keys):
    """INFO is a dict with redis_version; INFO keyspace has db0 with at least
    the keys written; INFO cluster says cluster_enabled:0, so that clients
    stay in standalone mode."""
    r.mset({keys.k(f"i:{i}"): i for i in range(50)})
    info = r.info()
    assert "redis_version" in info, f"[{config.label}] INFO has no redis_version: {sorted(info)[:20]}"
    keyspace = r.info("keyspace")
    assert "db0" in keyspace and keyspace["db0"]["keys"] >= 50, f"[{config.label}] INFO keyspace: {keyspace!r}"
    assert r.info("cluster").get("cluster_enabled") == 0, f"[{config.label}] INFO cluster: {r.info('cluster')!r}"
    assert "connected_clients" in r.info("clients")


def test_lastsave_is_an_integer(r, config):
    """LASTSAVE answers an integer (a Unix time); redis-py turns it into a
    datetime."""
    assert isinstance(r.lastsave(), datetime.datetime)
    with raw_client(config.expected_protocol) as raw:
        value = raw.call("LASTSAVE")
    assert isinstance(value, int) and value > 0, f"[{config.label}] LASTSAVE answered {value!r}"


def test_config_get_and_memory_usage(r, config, keys):
    """CONFIG GET answers name/value pairs; MEMORY USAGE answers the bytes of
    a key wherever it lives, nil for a missing key."""
    assert "maxmemory" in r.config_get("maxmemory")
    assert r.config_get("no-such-parameter-*") == {}
    for i in range(5):
        r.set(keys.k(f"mem:{i}"), "x" * 100)
        usage = r.memory_usage(keys.k(f"mem:{i}"))
        assert isinstance(usage, int) and usage > 100, f"[{config.label}] MEMORY USAGE: {usage!r}"
    assert r.memory_usage(keys.k("missing")) is None


# ------------------------------------------------------- scripts / functions


def test_script_load_then_evalsha_on_50_slots(r, config, keys):
    """A script loaded once with SCRIPT LOAD runs with EVALSHA on keys in 50
    different slots; SCRIPT EXISTS says which SHAs are known."""
    script = f"-- {RUN} {config.label} load\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    sha = r.script_load(script)
    assert text(sha) == hashlib.sha1(script.encode()).hexdigest()
    for i, key in enumerate(_keys_in_distinct_slots(keys, "load", 50)):
        assert r.evalsha(sha, 1, key, i + 1) == i + 1, f"[{config.label}] EVALSHA on {key}"
        assert r.get(key) == str(i + 1).encode()
    assert r.script_exists(sha, "0" * 40) == [True, False]


def test_evalsha_after_eval_on_50_slots(r, config, keys):
    """A script run once with EVAL is known by its SHA: EVALSHA then works on
    keys in 50 other slots. EVAL with no keys runs too; an unknown SHA gets
    NOSCRIPT."""
    script = f"-- {RUN} {config.label} eval\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    sha = hashlib.sha1(script.encode()).hexdigest()
    first, *others = _keys_in_distinct_slots(keys, "eval", 51)
    assert r.eval(script, 1, first, 7) == 7
    for key in others:
        assert r.evalsha(sha, 1, key, 3) == 3, f"[{config.label}] EVALSHA after EVAL on {key}"
    assert r.script_exists(sha) == [True]
    assert r.eval("return ARGV[1]", 0, "no keys") == b"no keys"
    assert r.eval("return 42", 0) == 42
    with pytest.raises(redis.exceptions.NoScriptError) as error:
        r.evalsha("0" * 40, 0)
    assert error_line(error.value) == "NOSCRIPT No matching script. Please use EVAL."


def _libraries(listing):
    """FUNCTION LIST -> [{'library_name': ..., 'functions': [names]}] for
    both reply shapes (RESP2 flat pairs, RESP3 maps)."""
    def as_dict(item):
        if isinstance(item, dict):
            return {text(k): v for k, v in item.items()}
        return {text(item[i]): item[i + 1] for i in range(0, len(item), 2)}

    out = []
    for lib in listing:
        lib = as_dict(lib)
        out.append({
            "library_name": text(lib["library_name"]),
            "functions": sorted(text(as_dict(f)["name"]) for f in lib["functions"]),
        })
    return out


def test_function_load_fcall_list_delete(r, config, keys):
    """FUNCTION LOAD makes a library whose functions FCALL runs on keys in
    any slot; FUNCTION LIST shows it once; FUNCTION DELETE removes it, after
    which FCALL fails and LIST no longer shows it."""
    library = f"lib_{RUN}_{config.label}"
    function = f"fn_{RUN}_{config.label}"
    code = (
        f"#!lua name={library}\n"
        f"redis.register_function('{function}', function(keys, args) "
        "return redis.call('SET', keys[1], args[1]) end)\n"
        f"redis.register_function{{function_name='{function}_ro', "
        "callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}"
    )
    try:
        assert text(r.function_load(code, replace=True)) == library
        assert text(r.function_load(code, replace=True)) == library, "REPLACE of the same library"
        with pytest.raises(redis.ResponseError) as error:
            r.function_load(code)
        assert error_line(error.value) == f"ERR Library '{library}' already exists"
        for i, key in enumerate(_keys_in_distinct_slots(keys, "fcall", 30)):
            assert r.fcall(function, 1, key, f"v{i}") == b"OK", f"[{config.label}] FCALL on {key}"
            assert r.fcall_ro(f"{function}_ro", 1, key) == f"v{i}".encode()
        listed = _libraries(r.function_list(library=library))
        assert listed == [{"library_name": library, "functions": sorted([function, f"{function}_ro"])}], (
            f"[{config.label}] FUNCTION LIST {library}: {listed!r}"
        )
        assert r.function_delete(library) is True
        assert _libraries(r.function_list(library=library)) == []
        with pytest.raises(redis.ResponseError) as error:
            r.fcall(function, 1, keys.k("after"), "x")
        assert error_line(error.value) == "ERR Function not found"
        with pytest.raises(redis.ResponseError) as error:
            r.function_delete(library)
        assert error_line(error.value) == "ERR Library not found"
    finally:
        try:
            r.function_delete(library)
        except redis.ResponseError:
            pass


@pytest.mark.skipif(
    os.environ.get("SLOTGATE_DESTRUCTIVE") != "1", reason="flushes the database: set SLOTGATE_DESTRUCTIVE=1"
)
def test_flushdb_async_empties_every_slot(r, config, keys):
    """FLUSHDB ASYNC removes every key at once (DBSIZE 0 right after, no key
    of any slot left), and the database takes writes again at once."""
    names = [keys.k(f"f:{i}") for i in range(300)]
    r.mset({n: "x" for n in names})
    assert r.flushdb(asynchronous=True) is True
    assert r.dbsize() == 0
    assert r.exists(*names) == 0
    assert r.keys("*") == [] and r.randomkey() is None
    assert r.set(names[0], "again") is True and r.get(names[0]) == b"again"
    assert r.dbsize() == 1
    assert r.flushdb() is True and r.dbsize() == 0


# ------------------------------------------------------------ slotgate only

REFUSED_ADMIN = [
    ("config-set", lambda k: ["CONFIG", "SET", "maxmemory", "0"], "config"),
    ("config-rewrite", lambda k: ["CONFIG", "REWRITE"], "config"),
    ("debug", lambda k: ["DEBUG", "SLEEP", "0"], "debug"),
    ("shutdown", lambda k: ["SHUTDOWN", "NOSAVE"], "shutdown"),
    ("monitor", lambda k: ["MONITOR"], "monitor"),
    ("cluster-nodes", lambda k: ["CLUSTER", "NODES"], "cluster"),
    ("migrate", lambda k: ["MIGRATE", "127.0.0.1", "1", k("migrate"), "0", "1000"], "migrate"),
    ("replicaof", lambda k: ["REPLICAOF", "NO", "ONE"], "replicaof"),
    ("slaveof", lambda k: ["SLAVEOF", "NO", "ONE"], "slaveof"),
    ("failover", lambda k: ["FAILOVER"], "failover"),
]


@pytest.mark.parametrize("args, name", [x[1:] for x in REFUSED_ADMIN], ids=[x[0] for x in REFUSED_ADMIN])
def test_admin_command_is_refused(r, config, keys, args, name):
    """Through slotgate only: commands that would reconfigure, stop or spy on
    one node of the cluster are refused with an `ERR` error naming the
    command; the same connection keeps working. (Never sent to a plain
    server: SHUTDOWN would stop it.)"""
    skip_unless_slotgate(r, f"{name} refusal")
    client = proxy_client(config, single_connection_client=True)
    try:
        with pytest.raises(redis.ResponseError) as error:
            client.execute_command(*args(keys.k))
        line = error_line(error.value)
        assert line.startswith("ERR "), f"[{config.label}] {name}: not an ERR error: {line!r}"
        assert name in line.lower(), f"[{config.label}] the error should name {name!r}: {line!r}"
        assert client.ping() is True, f"[{config.label}] the connection does not work after refusing {name}"
        key = keys.k(f"after:{name}")
        assert client.set(key, "ok") is True and client.get(key) == b"ok"
    finally:
        client.close()
    assert r.ping() is True


def test_cluster_keyslot_countkeysinslot_info(r, config, keys):
    """Through slotgate only (a plain server answers "cluster support
    disabled"): CLUSTER KEYSLOT gives the key's slot, CLUSTER COUNTKEYSINSLOT
    counts the keys of a slot, CLUSTER INFO answers."""
    skip_unless_slotgate(r, "CLUSTER KEYSLOT/COUNTKEYSINSLOT/INFO")
    for i in range(20):
        key = keys.k(f"slot:{i}")
        assert r.execute_command("CLUSTER", "KEYSLOT", key) == key_slot(key.encode())
    tagged = [keys.t(f"c:{i}") for i in range(7)]
    slot = key_slot(tagged[0].encode())
    # Other keys may share the slot (an earlier run's): count the difference.
    before = r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
    r.mset({n: 1 for n in tagged})
    assert r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == before + 7
    info = r.execute_command("CLUSTER", "INFO")
    assert "cluster_state" in str(info), f"[{config.label}] CLUSTER INFO: {info!r}"
    assert r.ping() is True
