"""Multi-key commands, as one Redis server answers them.

Commands that Redis Cluster can split per slot (MGET, MSET, DEL, UNLINK,
EXISTS, TOUCH) take keys from anywhere and answer exactly as one server
would: values in request order, counts summed. Commands whose keys must
share a slot work on hash-tagged keys like on one server; through slotgate
the same commands on keys of different slots get Redis Cluster's own
`CROSSSLOT` error (slotgate-only tests, skipped on a plain server)."""

import pytest
import redis

from issue4_helpers import CROSSSLOT, error_line, plain, skip_unless_slotgate, slots_of, stream_entries


def _score_pairs(pairs):
    """[(member, score), ...] in any redis-py shape -> [(member, float)]."""
    return [(m, float(s)) for m, s in pairs]


# ---------------------------------------------------------------- split/merge


def test_mget_of_1000_keys_keeps_request_order(r, config, keys):
    """MGET of 1,000 keys from many slots returns one value per key, in the
    order asked, None where the key does not exist; duplicates repeat."""
    names = [keys.k(f"mget:{i}") for i in range(1000)]
    assert len(slots_of(names)) > 500, "the keys should spread over many slots (all masters)"
    present = {n: f"value-{i}" for i, n in enumerate(names) if i % 7}
    assert r.mset(present) is True

    got = r.mget(names)

    assert len(got) == 1000, f"[{config.label}] {len(got)} values for 1000 keys"
    wrong = [
        (i, got[i]) for i, n in enumerate(names) if got[i] != (present[n].encode() if n in present else None)
    ]
    assert not wrong, f"[{config.label}] {len(wrong)} values out of place, first: {wrong[:3]}"
    # Reversed order, with duplicates and missing keys interleaved.
    ask = [names[999], names[0], names[7], names[0], names[500], names[14]]
    want = [present.get(n) for n in ask]
    assert r.mget(ask) == [w.encode() if w else None for w in want], f"[{config.label}] MGET with duplicates"
    assert r.delete(*names) == len(present)


def test_mset_many_keys_then_get_each(r, config, keys):
    """MSET of 500 keys in many slots answers OK once; every key then holds
    its own value; a later MSET overwrites only the keys it names."""
    mapping = {keys.k(f"mset:{i}"): f"v{i}" for i in range(500)}
    assert len(slots_of(mapping)) > 300
    assert r.mset(mapping) is True
    for name, value in mapping.items():
        assert r.get(name) == value.encode(), f"[{config.label}] GET {name} after MSET"
    again = {keys.k(f"mset:{i}"): f"w{i}" for i in range(0, 500, 5)}
    assert r.mset(again) is True
    assert r.mget(list(mapping)) == [
        (again.get(n) or v).encode() for n, v in mapping.items()
    ], f"[{config.label}] second MSET"
    r.delete(*mapping)


def test_del_unlink_exists_touch_sum_over_slots(r, config, keys):
    """DEL, UNLINK, EXISTS and TOUCH over keys in many slots return the sum of
    the per-key counts. EXISTS and TOUCH count a key named twice twice (as
    Redis does: EXISTS a a = 2); DEL and UNLINK delete it once."""
    names = [keys.k(f"cnt:{i}") for i in range(200)]
    # CRC16 is linear: names that differ in a counter collide more than
    # random ones (from 144 to 199 slots, depending on the run's prefix).
    assert len(slots_of(names)) > 100
    existing = names[:150]
    r.mset({n: "x" for n in existing})
    dup = existing[:10]

    assert r.exists(*names) == 150, f"[{config.label}] EXISTS over 200 keys, 150 present"
    assert r.exists(*(names + dup)) == 160, f"[{config.label}] EXISTS counts repeated keys"
    assert r.exists(existing[0], existing[0]) == 2, f"[{config.label}] EXISTS a a"
    assert r.touch(*(names + dup)) == 160, f"[{config.label}] TOUCH counts repeated keys"
    assert r.touch(existing[0], existing[0]) == 2, f"[{config.label}] TOUCH a a"

    first, second = names[:100], names[100:]
    assert r.unlink(*(first + first[:5])) == 100, f"[{config.label}] UNLINK of 100 present keys (5 named twice)"
    assert r.exists(*names) == 50
    assert r.delete(*(second + second[:5])) == 50, f"[{config.label}] DEL of 50 present of 100 (5 named twice)"
    assert r.exists(*names) == 0
    assert r.delete(*names) == 0 and r.unlink(*names) == 0 and r.touch(*names) == 0
    r.set(names[0], "again")
    assert r.delete(names[0], names[0]) == 1, f"[{config.label}] DEL a a deletes once"


def test_pipeline_mixing_multikey_and_single_key_commands(r, config, keys):
    """A non-transactional pipeline mixing MSET/MGET/DEL/EXISTS (keys in
    many slots) with single-key commands returns each reply in its place."""
    many = [keys.k(f"p:{i}") for i in range(60)]
    assert len(slots_of(many)) > 40
    counter, lst = keys.k("counter"), keys.k("list")
    pipe = r.pipeline(transaction=False)
    pipe.set(counter, 10)
    pipe.mset({n: f"v{i}" for i, n in enumerate(many)})
    pipe.incr(counter)
    pipe.mget(many)
    pipe.rpush(lst, "a", "b")
    pipe.exists(*many, many[0])
    pipe.delete(*many[:30])
    pipe.get(counter)
    pipe.mget(many[25:35])
    pipe.unlink(*many[30:], keys.k("missing"))
    pipe.lrange(lst, 0, -1)
    pipe.exists(*many)
    results = pipe.execute()
    expected = [
        True,
        True,
        11,
        [f"v{i}".encode() for i in range(60)],
        2,
        61,
        30,
        b"11",
        [None] * 5 + [f"v{i}".encode() for i in range(30, 35)],
        30,
        [b"a", b"b"],
        0,
    ]
    assert len(results) == len(expected)
    for i, (got, want) in enumerate(zip(results, expected)):
        assert got == want, f"[{config.label}] pipeline reply {i}: got {got!r}, expected {want!r}"


# ------------------------------------------------------------ same slot only


def test_same_slot_string_commands(r, config, keys):
    """MSETNX, RENAME, RENAMENX, COPY and BITOP on keys that share a hash tag
    behave as on one server."""
    t = keys.t
    assert r.msetnx({t("a"): "1", t("b"): "2"}) is True
    assert r.msetnx({t("b"): "x", t("c"): "3"}) is False, "MSETNX sets nothing when one key exists"
    assert r.mget(t("a"), t("b"), t("c")) == [b"1", b"2", None]

    assert r.rename(t("a"), t("renamed")) is True
    assert r.get(t("a")) is None and r.get(t("renamed")) == b"1"
    with pytest.raises(redis.ResponseError) as error:
        r.rename(t("nope"), t("other"))
    assert error_line(error.value) == "ERR no such key", f"[{config.label}] RENAME of a missing key"

    assert r.renamenx(t("renamed"), t("b")) is False, "RENAMENX onto an existing key"
    assert r.renamenx(t("renamed"), t("fresh")) is True
    assert r.get(t("fresh")) == b"1" and r.exists(t("renamed")) == 0

    assert r.copy(t("fresh"), t("copy")) is True
    assert r.copy(t("fresh"), t("copy")) is False, "COPY onto an existing key without REPLACE"
    r.set(t("fresh"), "2")
    assert r.copy(t("fresh"), t("copy"), replace=True) is True
    assert r.get(t("copy")) == b"2"

    r.set(t("bits1"), b"\xf0\x0f")
    r.set(t("bits2"), b"\xff\x00")
    assert r.bitop("AND", t("and"), t("bits1"), t("bits2")) == 2
    assert r.get(t("and")) == b"\xf0\x00"
    assert r.bitop("OR", t("or"), t("bits1"), t("bits2")) == 2
    assert r.get(t("or")) == b"\xff\x0f"
    assert r.bitop("XOR", t("xor"), t("bits1"), t("bits2"), t("nokey")) == 2
    assert r.get(t("xor")) == b"\x0f\x0f"
    assert r.bitop("NOT", t("not"), t("bits1")) == 2
    assert r.get(t("not")) == b"\x0f\xf0"


def test_same_slot_set_commands(r, config, keys):
    """SMOVE, SINTER/SUNION/SDIFF and their STORE forms, and SINTERCARD (with
    LIMIT) on hash-tagged sets."""
    t = keys.t
    r.sadd(t("s1"), "a", "b", "c", "d")
    r.sadd(t("s2"), "c", "d", "e")
    r.sadd(t("s3"), "d", "z")
    assert r.sinter(t("s1"), t("s2")) == {b"c", b"d"}
    assert r.sinter(t("s1"), t("s2"), t("s3")) == {b"d"}
    assert r.sunion(t("s1"), t("s2")) == {b"a", b"b", b"c", b"d", b"e"}
    assert r.sdiff(t("s1"), t("s2"), t("s3")) == {b"a", b"b"}
    assert r.sinter(t("s1"), t("missing")) == set()
    assert r.sinterstore(t("inter"), [t("s1"), t("s2")]) == 2
    assert r.smembers(t("inter")) == {b"c", b"d"}
    assert r.sunionstore(t("union"), [t("s1"), t("s3")]) == 5
    assert r.sdiffstore(t("diff"), [t("s2"), t("s1")]) == 1
    assert r.smembers(t("diff")) == {b"e"}
    assert r.sintercard(2, [t("s1"), t("s2")]) == 2
    assert r.sintercard(2, [t("s1"), t("s2")], limit=1) == 1
    assert r.sintercard(3, [t("s1"), t("s2"), t("s3")]) == 1
    assert r.smove(t("s1"), t("s3"), "a") is True
    assert r.smove(t("s1"), t("s3"), "a") is False, "SMOVE of a member no longer there"
    assert r.smembers(t("s3")) == {b"a", b"d", b"z"}


def test_same_slot_sorted_set_commands(r, config, keys):
    """ZUNIONSTORE/ZINTERSTORE/ZDIFFSTORE, ZUNION/ZINTER/ZDIFF, ZRANGESTORE
    and ZMPOP on hash-tagged sorted sets."""
    t = keys.t
    r.zadd(t("z1"), {"a": 1, "b": 2, "c": 3})
    r.zadd(t("z2"), {"b": 10, "c": 20, "d": 30})
    assert r.zunionstore(t("u"), [t("z1"), t("z2")]) == 4
    assert _score_pairs(r.zrange(t("u"), 0, -1, withscores=True)) == [
        (b"a", 1.0),
        (b"b", 12.0),
        (b"c", 23.0),
        (b"d", 30.0),
    ]
    assert r.zinterstore(t("i"), {t("z1"): 2, t("z2"): 1}, aggregate="MAX") == 2
    assert _score_pairs(r.zrange(t("i"), 0, -1, withscores=True)) == [(b"b", 10.0), (b"c", 20.0)]
    assert r.zdiffstore(t("d"), [t("z1"), t("z2")]) == 1
    assert r.zrange(t("d"), 0, -1) == [b"a"]
    assert r.zunion([t("z1"), t("z2")]) == [b"a", b"b", b"c", b"d"]
    assert r.zinter([t("z1"), t("z2")]) == [b"b", b"c"]
    assert r.zdiff([t("z2"), t("z1")]) == [b"d"]
    assert _score_pairs(plain(r.zunion([t("z1"), t("z2")], withscores=True))) == [
        (b"a", 1.0),
        (b"b", 12.0),
        (b"c", 23.0),
        (b"d", 30.0),
    ]
    assert r.zrangestore(t("rs"), t("u"), 1, 2) == 2
    assert r.zrange(t("rs"), 0, -1) == [b"b", b"c"]
    assert r.zrangestore(t("rs2"), t("u"), 20, 100, byscore=True) == 2

    got = plain(r.zmpop(2, [t("missing"), t("z1")], min=True, count=2))
    assert got[0] == t("z1").encode() and _score_pairs(got[1]) == [(b"a", 1.0), (b"b", 2.0)], (
        f"[{config.label}] ZMPOP: {got!r}"
    )
    got = plain(r.zmpop(1, [t("z2")], max=True))
    assert got[0] == t("z2").encode() and _score_pairs(got[1]) == [(b"d", 30.0)]
    assert r.zmpop(2, [t("missing"), t("missing2")], min=True) is None


def test_same_slot_list_commands(r, config, keys):
    """LMOVE, RPOPLPUSH and LMPOP on hash-tagged lists."""
    t = keys.t
    r.rpush(t("l1"), "a", "b", "c", "d")
    assert r.lmove(t("l1"), t("l2"), "LEFT", "RIGHT") == b"a"
    assert r.lmove(t("l1"), t("l2"), "RIGHT", "LEFT") == b"d"
    assert r.lrange(t("l2"), 0, -1) == [b"d", b"a"]
    assert r.rpoplpush(t("l1"), t("l2")) == b"c"
    assert r.lrange(t("l1"), 0, -1) == [b"b"] and r.lrange(t("l2"), 0, -1) == [b"c", b"d", b"a"]
    assert r.rpoplpush(t("missing"), t("l2")) is None
    assert r.lmove(t("missing"), t("l2")) is None
    assert plain(r.lmpop(2, t("missing"), t("l2"), direction="LEFT", count=2)) == [t("l2").encode(), [b"c", b"d"]]
    assert plain(r.lmpop(2, t("l1"), t("l2"), direction="RIGHT")) == [t("l1").encode(), [b"b"]]
    assert r.lmpop(1, t("l1"), direction="LEFT") is None


def test_same_slot_hyperloglog_geo_and_sort(r, config, keys):
    """PFCOUNT and PFMERGE over several HyperLogLogs, GEOSEARCHSTORE and
    SORT ... STORE on hash-tagged keys."""
    t = keys.t
    r.pfadd(t("h1"), *[f"a{i}" for i in range(100)])
    r.pfadd(t("h2"), *[f"a{i}" for i in range(50, 150)])
    union = r.pfcount(t("h1"), t("h2"))
    assert 145 <= union <= 155, f"[{config.label}] PFCOUNT of the union: {union}"
    assert r.pfmerge(t("hm"), t("h1"), t("h2")) is True
    assert r.pfcount(t("hm")) == union, "PFMERGE then PFCOUNT equals PFCOUNT of both"

    r.geoadd(t("geo"), [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania", 2.35, 48.86, "Paris"])
    stored = r.geosearchstore(t("near"), t("geo"), longitude=15, latitude=37, radius=200, unit="km")
    assert stored == 2, f"[{config.label}] GEOSEARCHSTORE: {stored}"
    assert r.zrange(t("near"), 0, -1) == [b"Palermo", b"Catania"]
    assert r.geosearchstore(t("near-d"), t("geo"), member="Palermo", radius=200, unit="km", storedist=True) == 2
    assert _score_pairs(r.zrange(t("near-d"), 0, 0, withscores=True)) == [(b"Palermo", 0.0)]

    r.rpush(t("nums"), 3, 1, 2, 10)
    assert r.sort(t("nums"), store=t("sorted")) == 4
    assert r.lrange(t("sorted"), 0, -1) == [b"1", b"2", b"3", b"10"]
    assert r.sort(t("nums"), desc=True, alpha=True, store=t("sorted")) == 4
    assert r.lrange(t("sorted"), 0, -1) == [b"3", b"2", b"10", b"1"]
    assert r.sort(t("missing"), store=t("sorted")) == 0
    assert r.exists(t("sorted")) == 0, "SORT ... STORE of an empty result deletes the destination"


def test_same_slot_xread_of_several_streams(r, config, keys):
    """XREAD and XREADGROUP over several hash-tagged streams answer for each
    stream that has entries."""
    t = keys.t
    r.xadd(t("s1"), {"f": "1"}, id="1-1")
    r.xadd(t("s2"), {"f": "2"}, id="2-1")
    r.xadd(t("s2"), {"f": "3"}, id="2-2")
    got = r.xread({t("s1"): "0", t("s2"): "2-1", t("s3"): "0"})
    assert stream_entries(got, t("s1")) == [("1-1", {"f": "1"})], f"[{config.label}] {got!r}"
    assert stream_entries(got, t("s2")) == [("2-2", {"f": "3"})], f"[{config.label}] {got!r}"
    assert stream_entries(got, t("s3")) == []
    r.xgroup_create(t("s1"), "g", id="0")
    r.xgroup_create(t("s2"), "g", id="0")
    got = r.xreadgroup("g", "c", {t("s1"): ">", t("s2"): ">"})
    assert stream_entries(got, t("s1")) == [("1-1", {"f": "1"})]
    assert stream_entries(got, t("s2")) == [("2-1", {"f": "2"}), ("2-2", {"f": "3"})]


def test_object_encoding(r, config, keys):
    """OBJECT ENCODING reports the encoding of the key it names, wherever the
    key lives; None for a missing key (a null reply)."""
    k = keys.k
    r.set(k("int"), 12345)
    r.set(k("short"), "hello")
    r.set(k("long"), "x" * 100)
    r.sadd(k("intset"), 1, 2, 3)
    r.hset(k("hash"), "f", "v")
    assert len(slots_of([k("int"), k("short"), k("long"), k("intset"), k("hash")])) > 1
    assert r.object("encoding", k("int")) == b"int"
    assert r.object("encoding", k("short")) == b"embstr"
    assert r.object("encoding", k("long")) == b"raw"
    assert r.object("encoding", k("intset")) == b"intset"
    assert r.object("encoding", k("hash")) == b"listpack"
    assert r.object("encoding", k("missing")) is None
    assert r.object("refcount", k("long")) == 1


# ------------------------------------------------------ slotgate: CROSSSLOT

# (id, call(r, a, b)) with a and b two missing keys in different slots: a
# cluster node checks the slots before anything else, so nothing but the
# slot check can answer.
CROSS = [
    ("msetnx", lambda r, a, b: r.msetnx({a: 1, b: 2})),
    ("rename", lambda r, a, b: r.rename(a, b)),
    ("renamenx", lambda r, a, b: r.renamenx(a, b)),
    ("copy", lambda r, a, b: r.copy(a, b)),
    ("smove", lambda r, a, b: r.smove(a, b, "m")),
    ("sinter", lambda r, a, b: r.sinter(a, b)),
    ("sunion", lambda r, a, b: r.sunion(a, b)),
    ("sdiff", lambda r, a, b: r.sdiff(a, b)),
    ("sinterstore", lambda r, a, b: r.sinterstore(a, [a, b])),
    ("sunionstore", lambda r, a, b: r.sunionstore(b, [a])),
    ("sdiffstore", lambda r, a, b: r.sdiffstore(a, [b])),
    ("sintercard", lambda r, a, b: r.sintercard(2, [a, b])),
    ("zunionstore", lambda r, a, b: r.zunionstore(a, [a, b])),
    ("zinterstore", lambda r, a, b: r.zinterstore(b, [a])),
    ("zdiffstore", lambda r, a, b: r.zdiffstore(a, [b])),
    ("zunion", lambda r, a, b: r.zunion([a, b])),
    ("zinter", lambda r, a, b: r.zinter([a, b])),
    ("zdiff", lambda r, a, b: r.zdiff([a, b])),
    ("zrangestore", lambda r, a, b: r.zrangestore(a, b, 0, -1)),
    ("lmove", lambda r, a, b: r.lmove(a, b)),
    ("rpoplpush", lambda r, a, b: r.rpoplpush(a, b)),
    ("lmpop", lambda r, a, b: r.lmpop(2, a, b, direction="LEFT")),
    ("zmpop", lambda r, a, b: r.zmpop(2, [a, b], min=True)),
    ("bitop", lambda r, a, b: r.bitop("AND", a, a, b)),
    ("pfcount", lambda r, a, b: r.pfcount(a, b)),
    ("pfmerge", lambda r, a, b: r.pfmerge(a, b)),
    ("geosearchstore", lambda r, a, b: r.geosearchstore(a, b, longitude=15, latitude=37, radius=1, unit="km")),
    ("sort-store", lambda r, a, b: r.sort(a, store=b)),
    ("xread", lambda r, a, b: r.xread({a: "0", b: "0"})),
    ("blpop", lambda r, a, b: r.blpop([a, b], 1)),
    ("blmove", lambda r, a, b: r.blmove(a, b, 1)),
    ("eval", lambda r, a, b: r.eval("return 1", 2, a, b)),
    ("evalsha", lambda r, a, b: r.evalsha("0" * 40, 2, a, b)),
    ("fcall", lambda r, a, b: r.fcall("no_such_function", 2, a, b)),
]


@pytest.mark.parametrize("name, call", CROSS, ids=[c[0] for c in CROSS])
def test_crossslot_is_refused(r, config, keys, name, call):
    """Through slotgate only: a same-slot-only command on keys of two slots
    gets exactly Redis Cluster's `CROSSSLOT Keys in request don't hash to
    the same slot`, and the connection keeps working."""
    skip_unless_slotgate(r, "CROSSSLOT")
    a, b = keys.apart(name)
    with pytest.raises(redis.ResponseError) as error:
        call(r, a, b)
    assert error_line(error.value) == CROSSSLOT, f"[{config.label}] got {error_line(error.value)!r}"
    assert isinstance(error.value, redis.exceptions.ClusterCrossSlotError)
    assert r.ping() is True
    assert r.exists(a, b) == 0, "nothing was written"
