"""Basic usage: a plain redis.Redis uses a whole Redis Cluster through slotgate.

Shows strings, counters, expiry, hashes, lists, sets and sorted sets; MSET and MGET of keys in
different slots, which slotgate splits per slot; DBSIZE and INFO for the whole cluster, with
slotgate's "# Proxy" section; and the key-to-slot rule with hash tags, checked against
CLUSTER KEYSLOT. Every step is checked: a wrong answer exits non-zero.

Run it from the repository's top folder:

    ./scripts/redis-cluster.sh start
    python examples/basic_usage.py

REDIS_HOST and REDIS_PORT say where slotgate listens (default localhost:6380).
"""

import time

from common import (
    SLOTGATE,
    check_key_slots,
    cleaned_up,
    expect,
    expect_at_least,
    run,
    slotgate_client,
)
from slots import SLOTS, crc16, key_slot

PREFIX = "example:basic:"


def data_types(r, prefix):
    """A round of each basic data type; runs unchanged on redis.Redis and on RedisCluster."""
    print("Strings, counters and expiry")
    expect("SET greeting", r.set(f"{prefix}greeting", "hello"), True)
    expect("GET greeting", r.get(f"{prefix}greeting"), "hello")
    expect("INCR visits", r.incr(f"{prefix}visits"), 1)
    expect("INCRBY visits 10", r.incrby(f"{prefix}visits", 10), 11)
    expect("DECR visits", r.decr(f"{prefix}visits"), 10)
    expect("SET session EX 60", r.set(f"{prefix}session", "token", ex=60), True)
    expect_at_least("TTL session, in seconds", r.ttl(f"{prefix}session"), 1)
    expect("SET flash PX 100", r.set(f"{prefix}flash", "gone soon", px=100), True)
    time.sleep(0.2)
    expect("GET flash 200 ms later", r.get(f"{prefix}flash"), None)

    print("Hashes")
    user = f"{prefix}user:1001"
    expect("HSET name, email", r.hset(user, mapping={"name": "Ada", "email": "ada@example.com"}), 2)
    expect("HGET name", r.hget(user, "name"), "Ada")
    expect("HINCRBY logins 3", r.hincrby(user, "logins", 3), 3)
    expect("HGETALL", r.hgetall(user), {"name": "Ada", "email": "ada@example.com", "logins": "3"})

    print("Lists")
    queue = f"{prefix}queue"
    expect("RPUSH job1 job2 job3", r.rpush(queue, "job1", "job2", "job3"), 3)
    expect("LPOP", r.lpop(queue), "job1")
    expect("LRANGE 0 -1", r.lrange(queue, 0, -1), ["job2", "job3"])

    print("Sets")
    tags = f"{prefix}tags"
    expect("SADD redis cluster proxy redis", r.sadd(tags, "redis", "cluster", "proxy", "redis"), 3)
    expect("SMEMBERS", r.smembers(tags), {"redis", "cluster", "proxy"})
    expect("SISMEMBER proxy", r.sismember(tags, "proxy"), 1)

    print("Sorted sets")
    board = f"{prefix}leaderboard"
    scores = {"alice": 100, "bob": 85, "carol": 92}
    expect("ZADD alice 100 bob 85 carol 92", r.zadd(board, scores), 3)
    expect("ZINCRBY bob 20", r.zincrby(board, 20, "bob"), 105.0)
    top = [("bob", 105.0), ("alice", 100.0), ("carol", 92.0)]
    expect("ZREVRANGE 0 -1 WITHSCORES", r.zrevrange(board, 0, -1, withscores=True), top)


def multi_key(r):
    """MSET, MGET, EXISTS and DEL over many slots: slotgate splits and merges them."""
    mapping = {f"{PREFIX}city:{i}": f"city-{i}" for i in range(10)}
    slots = {key_slot(key) for key in mapping}
    print(f"MSET/MGET of {len(mapping)} keys in {len(slots)} slots, one command each")
    expect("MSET", r.mset(mapping), True)
    expect("MGET", r.mget(list(mapping)), list(mapping.values()))
    expect("EXISTS", r.exists(*mapping), len(mapping))
    expect("DEL", r.delete(*mapping), len(mapping))


def whole_cluster(r):
    """DBSIZE and INFO answer for every master together, as one server would."""
    print("DBSIZE and INFO: the whole cluster as one server")
    ours = sum(1 for _ in r.scan_iter(match=f"{PREFIX}*"))
    expect_at_least(f"DBSIZE (this example wrote {ours} keys)", r.dbsize(), ours)
    expect("INFO server: redis_mode", r.info("server")["redis_mode"], "standalone")
    proxy = r.info("proxy")
    expect("INFO proxy: cluster_slots_served", proxy["cluster_slots_served"], SLOTS)
    print(f"  INFO proxy: slotgate {proxy['slotgate_version']}, {proxy['cluster_masters']} masters")


def slot_rule(r):
    """The key-to-slot rule, hash tags included, checked against the cluster."""
    print("Key to slot: CRC16/XMODEM of the hash tag (else the whole key) mod 16384")
    print("  (`slotgate slot KEY` prints the same)")
    expect("CRC16/XMODEM check value of '123456789'", hex(crc16(b"123456789")), "0x31c3")
    check_key_slots(lambda key: r.execute_command("CLUSTER", "KEYSLOT", key))
    tagged = ["{user:1001}:profile", "{user:1001}:settings", "{user:1001}:sessions"]
    whole_key = [crc16(key.encode()) % SLOTS for key in tagged]
    print(f"  the guide's crc16(key) % 16384 ignores the tag: slots {whole_key} for {tagged}")
    same_slot = {key_slot("user:1001")}
    expect("slots of the three by Redis's rule", {key_slot(key) for key in tagged}, same_slot)


def main():
    r = slotgate_client()
    print(f"Connected to {SLOTGATE} with a plain redis.Redis: PING -> {r.ping()}")
    with cleaned_up(r, PREFIX):
        data_types(r, PREFIX)
        multi_key(r)
        whole_cluster(r)
        slot_rule(r)


if __name__ == "__main__":
    run(main, SLOTGATE)
