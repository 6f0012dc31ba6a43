"""The setup guide's "official client" example: redis-py's RedisCluster, straight to the nodes.

For comparison with basic_usage.py, which does the same through slotgate: RedisCluster learns
the slot map from the startup nodes and sends each command to the master of its key's slot.
The application pays for it in multi-key commands: MSET of keys in different slots raises, so
it must use hash tags or mset_nonatomic, while through slotgate a plain redis.Redis sends that
MSET as it is. The example also checks key_slot (examples/slots.py) against the nodes' own
CLUSTER KEYSLOT. Every step is checked: a wrong answer exits non-zero.

Run it from the repository's top folder:

    ./scripts/redis-cluster.sh start
    python examples/official_demo.py

REDIS_CLUSTER_NODES gives the startup nodes, comma-separated host:port
(default localhost:7001,localhost:7002,localhost:7003).
"""

import os

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from basic_usage import data_types
from common import TIMEOUT_SECONDS, Mismatch, check_key_slots, cleaned_up, expect, run
from slots import key_slot

PREFIX = "example:official:"
NODES = os.environ.get("REDIS_CLUSTER_NODES", "localhost:7001,localhost:7002,localhost:7003")
CLUSTER = f"the cluster nodes {NODES}"


def startup_nodes():
    """REDIS_CLUSTER_NODES as redis-py's ClusterNode list."""
    addresses = (item.strip().rsplit(":", 1) for item in NODES.split(",") if item.strip())
    return [ClusterNode(host, int(port)) for host, port in addresses]


def connect():
    """A RedisCluster on the startup nodes, as the guide's "Multiple Node Discovery" builds it."""
    try:
        return RedisCluster(
            startup_nodes=startup_nodes(),
            decode_responses=True,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
    except RedisClusterException as error:
        # No startup node answered as a cluster node: say so as for any unreachable server.
        raise redis.ConnectionError(str(error)) from error


def multi_key(rc):
    """Multi-key commands over several slots: what a cluster-aware client must do instead."""
    mapping = {f"{PREFIX}city:{i}": f"city-{i}" for i in range(10)}
    slots = {key_slot(key) for key in mapping}
    print(f"MSET/MGET of {len(mapping)} keys in {len(slots)} slots")
    try:
        rc.mset(mapping)
    except RedisClusterException as error:
        print(f"  MSET raises: {error}")
    else:
        raise Mismatch("RedisCluster ran a cross-slot MSET: expected it to raise")
    expect("mset_nonatomic: one MSET per slot", rc.mset_nonatomic(mapping), [True] * len(slots))
    expect("mget_nonatomic", rc.mget_nonatomic(list(mapping)), list(mapping.values()))
    print("  (through slotgate, a plain redis.Redis sends each as one command: basic_usage.py)")
    tagged = {f"{PREFIX}{{user:1001}}:{name}": name for name in ("profile", "settings", "sessions")}
    expect("MSET of {user:1001} keys, one slot", rc.mset(tagged), True)
    expect("MGET of them", rc.mget(list(tagged)), list(tagged.values()))


def main():
    rc = connect()
    masters = sorted(node.name for node in rc.get_primaries())
    print(f"Connected to the cluster through {NODES}: masters {', '.join(masters)}")
    with cleaned_up(rc, PREFIX):
        data_types(rc, PREFIX)
        multi_key(rc)
        print("Key to slot: key_slot here and CLUSTER KEYSLOT on a node")
        check_key_slots(rc.cluster_keyslot)


if __name__ == "__main__":
    run(main, CLUSTER)
