"""Hash tags: keys with the same {tag} share a slot, so multi-key commands
on them work through slotgate; keys in different slots are refused with
Redis's CROSSSLOT error."""

import pytest
import redis

from conftest import NODES, RUN, node_client


@pytest.fixture(scope="module")
def keyslot():
    host, port = NODES[0]
    node = node_client(host, port)
    yield lambda key: node.cluster("KEYSLOT", key)
    node.close()


def test_tagged_keys_share_a_slot_and_multi_key_commands_work(r, config, keyslot):
    # The names the product brief uses, made unique per run and protocol.
    tag = f"user:1001:{config.label}:{RUN}"
    profile, settings, copy = f"{{{tag}}}:profile", f"{{{tag}}}:settings", f"{{{tag}}}:copy"
    assert keyslot(profile) == keyslot(settings) == keyslot(tag), "CLUSTER KEYSLOT must honour the hash tag"
    assert keyslot("{user:1001}:profile") == keyslot("{user:1001}:settings") == keyslot("user:1001")

    assert r.mset({profile: "ada", settings: "dark"}) is True
    assert r.mget(profile, settings) == [b"ada", b"dark"]
    assert r.exists(profile, settings) == 2
    assert r.rename(profile, copy) is True
    assert r.mget(profile, settings, copy) == [None, b"dark", b"ada"]
    assert r.delete(settings, copy) == 2
    r.sadd(profile, "a", "b")
    r.sadd(settings, "b", "c")
    assert r.sinter(profile, settings) == {b"b"}
    assert r.sunionstore(copy, [profile, settings]) == 3
    assert r.eval("return redis.call('SCARD', KEYS[1]) + redis.call('SCARD', KEYS[2])", 2, profile, settings) == 4
    assert r.delete(profile, settings, copy) == 3
    assert r.exists(profile, settings, copy) == 0


def test_keys_in_different_slots_are_refused(r, config, keys, keyslot):
    a, b = keys.apart("ab")
    assert keyslot(a) != keyslot(b), "test keys must be in different slots"
    r.set(a, "1")
    # MGET, MSET, DEL and the like are split per slot instead (test_multikey.py).
    attempts = {
        "MSETNX": lambda: r.msetnx({a: "1", b: "2"}),
        "SINTER": lambda: r.sinter(a, b),
        "RENAME": lambda: r.rename(a, b),
        "EVAL": lambda: r.eval("return 1", 2, a, b),
    }
    for name, attempt in attempts.items():
        with pytest.raises(redis.ResponseError) as error:
            attempt()
        message = str(error.value)
        # redis-py strips the "CROSSSLOT" code into the exception class.
        assert isinstance(error.value, redis.exceptions.ClusterCrossSlotError) or "CROSSSLOT" in message, (
            f"[{config.label}] {name} across slots: {type(error.value).__name__} {message!r}"
        )
        assert "hash to the same slot" in message, (
            f"[{config.label}] {name} across slots: unexpected error {message!r}"
        )
        assert r.ping() is True, f"[{config.label}] client unusable after the {name} refusal"
    # Nothing was half-done: the one key that existed is untouched.
    assert r.get(a) == b"1" and r.exists(b) == 0


# Redis hashes only what is between the first "{" and the first "}" after
# it, and the whole key when that is empty or missing.
TAG_CASES = [
    ("{t}1", "{t}2"),
    ("{}a", "{}b"),
    ("{{t}}1", "{{t}}2"),
    ("a{t}{c}", "x{t}"),
    ("a}{t}", "c}{t}"),
    ("{t", "{t"),
    ("t}", "{t}"),
    ("{t}", "t"),
]


def test_hash_tag_edge_cases_agree_with_the_cluster(r, config, keyslot):
    for first, second in TAG_CASES:
        # Unique per run and protocol without changing which part is hashed:
        # the suffix has no braces and comes after every brace.
        suffix = f"|{config.label}|{RUN}"
        a, b = first + suffix, second + suffix
        same = keyslot(a) == keyslot(b)
        # Split per slot when needed, MSET and MGET work either way.
        assert r.mset({a: "1", b: "2"}) is True, f"[{config.label}] MSET {a!r} {b!r}"
        want = [b"1", b"2"] if a != b else [b"2", b"2"]
        assert r.mget(a, b) == want, f"[{config.label}] MGET {a!r} {b!r}"
        # MSETNX needs one slot: it sets nothing (the keys exist) or is refused.
        if same:
            assert r.msetnx({a: "3", b: "4"}) is False, f"[{config.label}] MSETNX {a!r} {b!r}"
        else:
            with pytest.raises(redis.ResponseError, match="hash to the same slot"):
                r.msetnx({a: "3", b: "4"})
        r.delete(a, b)
