"""Every data type through slotgate with a plain `redis.Redis`, compared
with the same operations run on the cluster directly (`RedisCluster`, same
protocol and decoding), in RESP3 (redis-py's default and protocol=3) and
RESP2 (protocol=2), with and without decode_responses.

Each test is a function `ops(client, keys)` returning the list of results;
`pair.check` runs it on both sides and compares step by step. A few exact
values are asserted as well, so that both sides being wrong the same way
cannot pass unnoticed.
"""

import pytest
import redis

from conftest import normalize


def b(pair, text):
    """What a bulk string reply looks like with this client's decoding."""
    return text if pair.config.decoded else text.encode()


@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
def test_strings(pair):
    def ops(c, k):
        s, n, f, tmp = k.k("s"), k.k("n"), k.k("f"), k.k("tmp")
        return [
            c.set(s, "hello"),
            c.get(s),
            c.append(s, " world"),
            c.getrange(s, 0, 4),
            c.setrange(s, 6, "WORLD"),
            c.strlen(s),
            c.get(s),
            c.set(s, "again", get=True),
            c.set(s, "never", nx=True),
            c.set(k.k("absent"), "x", xx=True),
            c.setnx(s, "nope"),
            c.set(n, 10),
            c.incr(n),
            c.incrby(n, 5),
            c.decr(n),
            c.decrby(n, 3),
            c.set(f, "10.5"),
            c.incrbyfloat(f, 0.1),
            c.incrbyfloat(f, -5),
            c.setex(tmp, 100, "short-lived"),
            c.get(tmp),
            c.getex(tmp, ex=200),
            c.getex(tmp, persist=True),
            c.ttl(tmp),
            c.getdel(tmp),
            c.exists(tmp),
            c.get(k.k("missing")),
            c.mset({k.t("a"): "1", k.t("b"): "2", k.t("c"): "3"}),
            c.mget(k.t("a"), k.t("b"), k.t("c"), k.t("missing")),
            c.msetnx({k.t("a"): "x", k.t("d"): "4"}),
            c.msetnx({k.t("d"): "4", k.t("e"): "5"}),
            c.mget([k.t("d"), k.t("e")]),
            c.getset(s, "swapped"),
            c.get(s),
        ]

    got = pair.check(ops, "strings")
    assert got[1] == b(pair, "hello"), got[1]
    assert got[6] == b(pair, "hello WORLD"), got[6]
    assert got[12:16] == [11, 16, 15, 12], got[12:16]
    assert got[28] == [b(pair, "1"), b(pair, "2"), b(pair, "3"), None], got[28]


def test_hashes(pair):
    def ops(c, k):
        h = k.k("h")
        return [
            c.hset(h, mapping={"name": "ada", "age": "36", "lang": "en"}),
            c.hset(h, "city", "london"),
            c.hgetall(h),
            c.hget(h, "name"),
            c.hmget(h, ["name", "nope", "age"]),
            c.hincrby(h, "age", 2),
            c.hincrbyfloat(h, "score", 1.5),
            c.hincrbyfloat(h, "score", 0.25),
            c.hexists(h, "city"),
            c.hsetnx(h, "city", "paris"),
            c.hstrlen(h, "city"),
            c.hlen(h),
            sorted(c.hkeys(h)),
            sorted(c.hvals(h)),
            c.hdel(h, "lang", "nope"),
            c.hscan(h, 0, match="*", count=100),
            c.hgetall(k.k("missing")),
        ]

    got = pair.check(ops, "hashes")
    assert got[2] == {
        b(pair, "name"): b(pair, "ada"),
        b(pair, "age"): b(pair, "36"),
        b(pair, "lang"): b(pair, "en"),
        b(pair, "city"): b(pair, "london"),
    }, got[2]
    assert got[5] == 38 and got[7] == 1.75, got[5:8]


def test_lists(pair):
    def ops(c, k):
        lst = k.k("l")
        return [
            c.rpush(lst, "a", "b", "c", "d", "e"),
            c.lpush(lst, "z"),
            c.lrange(lst, 0, -1),
            c.lpop(lst),
            c.lpop(lst, 2),
            c.rpop(lst),
            c.linsert(lst, "BEFORE", "d", "c2"),
            c.linsert(lst, "AFTER", "nope", "x"),
            c.lrange(lst, 0, -1),
            c.lmove(lst, lst, "LEFT", "RIGHT"),
            c.lrange(lst, 0, -1),
            c.lindex(lst, 1),
            c.llen(lst),
            c.lset(lst, 0, "first"),
            c.rpush(lst, "dup", "dup", "dup"),
            c.lrem(lst, 2, "dup"),
            c.lpos(lst, "dup"),
            c.ltrim(lst, 0, 2),
            c.lrange(lst, 0, -1),
            c.lpop(k.k("missing")),
            c.lpop(k.k("missing"), 3),
        ]

    got = pair.check(ops, "lists")
    assert got[2] == [b(pair, x) for x in "zabcde"], got[2]
    assert got[4] == [b(pair, "a"), b(pair, "b")], got[4]


def test_sets(pair):
    def ops(c, k):
        a, bb, dst = k.t("a"), k.t("b"), k.t("dst")
        return [
            c.sadd(a, "x", "y", "z", "x"),
            c.sadd(bb, "y", "z", "w"),
            c.smembers(a),
            c.sismember(a, "x"),
            c.sismember(a, "nope"),
            c.smismember(a, ["x", "nope", "z"]),
            c.scard(a),
            c.sinter(a, bb),
            c.sunion(a, bb),
            c.sdiff(a, bb),
            c.sinterstore(dst, [a, bb]),
            c.smembers(dst),
            c.smove(a, bb, "x"),
            c.srem(bb, "w", "nope"),
            c.smembers(bb),
            c.smembers(k.k("missing")),
        ]

    got = pair.check(ops, "sets")
    assert got[7] == normalize({b(pair, "y"), b(pair, "z")}, "<no prefix>"), got[7]


def test_sorted_sets(pair):
    def ops(c, k):
        z, z2, dst = k.t("z"), k.t("z2"), k.t("dst")
        return [
            c.zadd(z, {"a": 1, "b": 2, "c": 3.5, "d": -1}),
            c.zadd(z, {"a": 10}, nx=True),
            c.zrange(z, 0, -1),
            c.zrange(z, 0, -1, withscores=True),
            c.zrevrange(z, 0, 1, withscores=True),
            c.zscore(z, "c"),
            c.zscore(z, "nope"),
            c.zmscore(z, ["a", "nope", "b"]),
            c.zincrby(z, 2.5, "a"),
            c.zrank(z, "a"),
            c.zcard(z),
            c.zcount(z, 0, 3),
            c.zrangebyscore(z, 0, 5),
            c.zrangebyscore(z, "(1", "+inf", withscores=True, start=0, num=2),
            c.zpopmin(z),
            c.zpopmin(z, 2),
            c.zpopmax(z),
            c.zadd(z, {"m": 1, "n": 2}),
            c.zadd(z2, {"n": 5, "o": 6}),
            c.zunionstore(dst, [z, z2]),
            c.zrange(dst, 0, -1, withscores=True),
            c.zinter([z, z2], withscores=True),
            c.zrem(z, "m", "nope"),
            c.zrange(k.k("missing"), 0, -1, withscores=True),
        ]

    got = pair.check(ops, "sorted sets")
    assert got[2] == [b(pair, x) for x in "dabc"], got[2]
    assert got[5] == 3.5 and got[6] is None and got[8] == 3.5, (got[5], got[6], got[8])


def test_streams(pair):
    def ops(c, k):
        s = k.k("stream")
        # Explicit IDs keep every reply (XINFO included) deterministic.
        out = [
            c.xadd(s, {"f": "1"}, id="1-1"),
            c.xadd(s, {"f": "2", "g": "x"}, id="1-2"),
            c.xadd(s, {"f": "3"}, id="2-0"),
            c.xlen(s),
            c.xrange(s),
            c.xrange(s, min="1-2", max="+", count=1),
            c.xrevrange(s, count=2),
            c.xread({s: "0-0"}, count=2),
            c.xread({s: "2-0"}),
            c.xgroup_create(s, "grp", id="0"),
            c.xreadgroup("grp", "alice", {s: ">"}, count=2),
            c.xreadgroup("grp", "bob", {s: ">"}),
            c.xreadgroup("grp", "bob", {s: ">"}),
            c.xack(s, "grp", "1-1", "1-2"),
            c.xpending(s, "grp"),
            c.xdel(s, "1-1"),
            c.xtrim(s, maxlen=5),
            c.xinfo_stream(s),
            c.xinfo_groups(s),
            c.xlen(k.k("missing")),
        ]
        return out

    got = pair.check(ops, "streams")
    assert got[0] == b(pair, "1-1") and got[3] == 3, (got[0], got[3])


def test_sort(pair):
    def ops(c, k):
        lst, words, dst = k.t("nums"), k.t("words"), k.t("sorted")
        c.rpush(lst, 3, 1, 2, 10)
        c.rpush(words, "pear", "apple", "fig")
        return [
            c.sort(lst),
            c.sort(lst, desc=True, start=0, num=2),
            c.sort(words, alpha=True),
            c.sort(lst, store=dst),
            c.lrange(dst, 0, -1),
            c.sort_ro(lst),
        ]

    got = pair.check(ops, "SORT")
    assert got[0] == [b(pair, x) for x in ("1", "2", "3", "10")], got[0]


def test_bitmaps(pair):
    def ops(c, k):
        bm, bf = k.k("bits"), k.k("field")
        return [
            c.setbit(bm, 7, 1),
            c.setbit(bm, 7, 0),
            c.setbit(bm, 100, 1),
            c.setbit(bm, 3, 1),
            c.getbit(bm, 3),
            c.getbit(bm, 4),
            c.bitcount(bm),
            c.bitcount(bm, 0, 0),
            c.bitpos(bm, 1),
            c.bitfield(bf).set("u8", 0, 200).incrby("u8", 0, 100).get("u8", 0).execute(),
            c.bitfield(bf).overflow("SAT").incrby("u8", 0, 1000).overflow("FAIL").incrby("i8", 8, 200).execute(),
            c.bitfield_ro(bf, "u8", 0, items=[("u4", 4)]),
            c.get(bf) if not pair.config.decoded else None,
        ]

    got = pair.check(ops, "bitmaps")
    assert got[4:7] == [1, 0, 2], got[4:7]
    assert got[9] == [0, 44, 44], got[9]


def test_hyperloglog(pair):
    def ops(c, k):
        h1, h2, dst = k.t("h1"), k.t("h2"), k.t("merged")
        return [
            c.pfadd(h1, *[f"a{i}" for i in range(100)]),
            c.pfadd(h1, "a1"),
            c.pfadd(h2, *[f"a{i}" for i in range(50, 150)]),
            c.pfcount(h1),
            c.pfcount(h1, h2),
            c.pfmerge(dst, h1, h2),
            c.pfcount(dst),
            c.pfcount(k.k("missing")),
        ]

    got = pair.check(ops, "hyperloglog")
    assert got[0] == 1 and got[1] == 0, got[:2]
    assert 95 <= got[3] <= 105 and 140 <= got[6] <= 160, got


def test_geo(pair):
    def ops(c, k):
        g = k.k("geo")
        return [
            c.geoadd(g, [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"]),
            c.geoadd(g, [12.496366, 41.902782, "Rome"]),
            c.geopos(g, "Palermo", "nope", "Catania"),
            c.geodist(g, "Palermo", "Catania", unit="km"),
            c.geodist(g, "Palermo", "nope"),
            c.geohash(g, "Palermo"),
            c.geosearch(g, longitude=15, latitude=37, radius=200, unit="km", sort="ASC"),
            c.geosearch(
                g, member="Palermo", radius=500, unit="km", withdist=True, withcoord=True, withhash=True, sort="ASC"
            ),
            c.geosearch(g, longitude=15, latitude=37, width=400, height=400, unit="km", sort="DESC", count=1),
        ]

    got = pair.check(ops, "geo")
    assert got[0] == 2 and abs(got[3] - 166.2742) < 0.01, (got[0], got[3])


def test_expiry(pair):
    # TTLs tick while the test runs: compare them as ranges, not values.
    def ops(c, k):
        key, other = k.k("e"), k.k("other")
        c.set(key, "v")
        c.set(other, "v")
        out = {
            "ttl_none": c.ttl(key),
            "expire": c.expire(key, 100),
            "ttl": c.ttl(key),
            "pttl": c.pttl(key),
            "expire_nx": c.expire(key, 50, nx=True),
            "expire_gt": c.expire(key, 200, gt=True),
            "ttl_gt": c.ttl(key),
            "persist": c.persist(key),
            "persist_again": c.persist(key),
            "ttl_after_persist": c.ttl(key),
            "pexpire": c.pexpire(other, 50_000),
            "pttl_other": c.pttl(other),
            "ttl_missing": c.ttl(k.k("missing")),
            "expire_missing": c.expire(k.k("missing"), 10),
            "px_set": c.set(key, "v2", px=30_000),
            "pttl_px": c.pttl(key),
        }
        return out

    got, want = pair.run(ops)
    label = pair.config.label
    for side, res in (("slotgate", got), ("cluster", want)):
        assert res["ttl_none"] == -1, f"[{label}] {side}: {res}"
        assert res["expire"] is True and res["expire_nx"] is False and res["expire_gt"] is True, f"[{label}] {side}: {res}"
        assert 98 <= res["ttl"] <= 100, f"[{label}] {side}: TTL after EXPIRE 100: {res['ttl']}"
        assert 98_000 <= res["pttl"] <= 100_000, f"[{label}] {side}: PTTL after EXPIRE 100: {res['pttl']}"
        assert 198 <= res["ttl_gt"] <= 200, f"[{label}] {side}: {res}"
        assert res["persist"] is True and res["persist_again"] is False, f"[{label}] {side}: {res}"
        assert res["ttl_after_persist"] == -1, f"[{label}] {side}: {res}"
        assert res["pexpire"] is True and 48_000 <= res["pttl_other"] <= 50_000, f"[{label}] {side}: {res}"
        assert res["ttl_missing"] == -2 and res["expire_missing"] is False, f"[{label}] {side}: {res}"
        assert res["px_set"] is True and 28_000 <= res["pttl_px"] <= 30_000, f"[{label}] {side}: {res}"
    # Everything that does not tick must be identical.
    ticking = {"ttl", "pttl", "ttl_gt", "pttl_other", "pttl_px"}
    assert {k: v for k, v in got.items() if k not in ticking} == {
        k: v for k, v in want.items() if k not in ticking
    }, f"[{label}] expiry results differ: slotgate {got} cluster {want}"


def test_keyspace(pair):
    def ops(c, k):
        s, h, lst, st, z, x = k.k("s"), k.k("h"), k.k("l"), k.k("set"), k.k("z"), k.k("x")
        c.set(s, "v")
        c.hset(h, "f", "v")
        c.rpush(lst, "a", "b")
        c.sadd(st, "m")
        c.zadd(z, {"m": 1})
        c.xadd(x, {"f": "v"}, id="1-0")
        src, dst, other = k.t("src"), k.t("dst"), k.t("other")
        out = [
            [c.type(key) for key in (s, h, lst, st, z, x, k.k("missing"))],
            c.exists(s),
            c.exists(k.k("missing")),
            c.set(src, "payload"),
            c.set(other, "o"),
            c.exists(src, other, k.t("missing")),
            c.rename(src, dst),
            c.get(dst),
            c.exists(src),
            c.renamenx(dst, other),
            c.copy(dst, k.t("copy")),
            c.get(k.t("copy")),
            c.touch(dst, other),
            c.delete(s),
            c.delete(s),
            c.delete(dst, other, k.t("copy")),
            c.unlink(h),
            c.object("encoding", lst),
        ]
        dump = c.dump(lst)
        out += [
            dump,
            c.restore(k.k("restored"), 0, dump),
            c.lrange(k.k("restored"), 0, -1),
            c.restore(k.k("restored"), 5000, dump, replace=True),
            0 < c.pttl(k.k("restored")) <= 5000,
            c.dump(k.k("missing")),
        ]
        return out

    got = pair.check(ops, "keyspace")
    assert got[0] == [b(pair, t) for t in ("string", "hash", "list", "set", "zset", "stream", "none")], got[0]
    assert isinstance(got[18], bytes) and got[20] == [b(pair, "a"), b(pair, "b")], got[18:21]


def test_restore_rejects_an_existing_key(pair):
    def ops(c, k):
        c.set(k.k("a"), "1")
        dump = c.dump(k.k("a"))
        try:
            c.restore(k.k("a"), 0, dump)
        except redis.ResponseError as e:
            return ["error", str(e)]
        return ["no error"]

    got = pair.check(ops, "RESTORE onto an existing key")
    assert got[0] == "error" and "BUSYKEY" in got[1], got


def test_eval_with_one_key(pair):
    def ops(c, k):
        key = k.k("counter")
        return [
            c.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, key, 5),
            c.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, key, 7),
            c.eval("return {KEYS[1] == ARGV[1], redis.call('GET', KEYS[1]), {1, 'two', {3}}}", 1, key, key),
            c.eval("return redis.call('SET', KEYS[1], 'lua')", 1, key),
            c.eval("return redis.status_reply('FINE')", 1, key),
            c.eval("return 3.99", 1, key),
            c.eval("return redis.call('GET', KEYS[1])", 1, key),
            c.eval_ro("return redis.call('STRLEN', KEYS[1])", 1, key),
        ]

    got = pair.check(ops, "EVAL")
    assert got[0] == 5 and got[1] == 12, got[:2]
    assert got[6] == b(pair, "lua"), got[6]


def test_script_errors_come_back_as_errors(pair):
    def ops(c, k):
        key = k.k("k")
        c.set(key, "text")
        out = []
        for script in ("return redis.call('INCR', KEYS[1])", "return redis.error_reply('MYERR custom')"):
            try:
                out.append(c.eval(script, 1, key))
            except redis.ResponseError as e:
                out.append(("ResponseError", str(e).split(" script:")[0]))
        out.append(c.get(key))
        return out

    got = pair.check(ops, "EVAL errors")
    assert got[0][0] == "ResponseError" and got[1][0] == "ResponseError", got
