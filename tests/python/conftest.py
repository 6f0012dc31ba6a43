"""Shared fixtures for the redis-py suite.

tests/python_clients.rs starts a 3-master/3-replica cluster and slotgate in
front of it, then runs this suite with:

  SLOTGATE_PORT  slotgate's port on 127.0.0.1
  CLUSTER_NODES  comma-separated host:port list of every cluster node

Clients are built the way a legacy application builds them: a plain
`redis.Redis` pointed at slotgate. Where results are compared, the reference
is `redis.cluster.RedisCluster` talking to the nodes directly with the same
protocol and decoding settings, on keys with a different prefix.
"""

import os
import uuid

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

# Generous enough for a debug build under load, short enough that a command
# slotgate fails to answer shows up as a timeout instead of a hung suite.
SOCKET_TIMEOUT = 10


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(
            f"{name} is not set: run this suite through `cargo test --test python_clients`, "
            "which starts the cluster and slotgate and sets SLOTGATE_PORT and CLUSTER_NODES",
            returncode=2,
        )
    return value


PORT = int(_env("SLOTGATE_PORT"))
NODES = [
    (host, int(port))
    for host, port in (item.strip().rsplit(":", 1) for item in _env("CLUSTER_NODES").split(",") if item.strip())
]

# One token per pytest run: re-running the suite against the same cluster
# never meets keys of an earlier run.
RUN = uuid.uuid4().hex[:8]


class Config:
    """One way of building a client: its label, its redis-py keyword
    arguments, and the protocol it must end up speaking."""

    def __init__(self, label, expected_protocol, **kwargs):
        self.label = label
        self.expected_protocol = expected_protocol
        self.kwargs = kwargs

    @property
    def decoded(self):
        return bool(self.kwargs.get("decode_responses"))

    def __repr__(self):
        return self.label


# redis-py 8 speaks RESP3 when no protocol is given (and, by default, keeps
# RESP2-shaped Python results on it); protocol=3 asks for RESP3 explicitly
# and returns RESP3 shapes; protocol=2 is the classic wire protocol.
DEFAULT = Config("default", 3)
RESP3 = Config("resp3", 3, protocol=3)
RESP2 = Config("resp2", 2, protocol=2)
BASE_CONFIGS = [DEFAULT, RESP3, RESP2]
ALL_CONFIGS = BASE_CONFIGS + [
    Config("default-decoded", 3, decode_responses=True),
    Config("resp3-decoded", 3, protocol=3, decode_responses=True),
    Config("resp2-decoded", 2, protocol=2, decode_responses=True),
]


def proxy_client(config, **extra):
    """A plain `redis.Redis` on slotgate, as a legacy application builds it."""
    kwargs = dict(config.kwargs, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
    kwargs.update(extra)
    return redis.Redis(host="127.0.0.1", port=PORT, **kwargs)


def node_client(host, port, config=RESP2, **extra):
    """A plain `redis.Redis` on one cluster node."""
    kwargs = dict(config.kwargs, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
    kwargs.update(extra)
    return redis.Redis(host=host, port=port, **kwargs)


def negotiated_protocol(client):
    """The protocol a pooled connection of `client` speaks, and the HELLO
    reply it got (None when no HELLO was sent, as in RESP2)."""
    connection = client.connection_pool.get_connection()
    try:
        connection.connect()
        return int(connection.protocol), connection.handshake_metadata
    finally:
        client.connection_pool.release(connection)


def assert_protocol(client, config, who):
    protocol, hello = negotiated_protocol(client)
    assert protocol == config.expected_protocol, (
        f"{who} with {config.label!r} settings {config.kwargs} speaks RESP{protocol}, expected "
        f"RESP{config.expected_protocol} (redis-py {redis.__version__})"
    )
    if config.expected_protocol == 3:
        assert hello is not None, f"{who}: a RESP3 connection must have sent HELLO 3 and kept its reply"
        proto = hello.get(b"proto", hello.get("proto"))
        assert proto == 3, f"{who}: HELLO reply says proto={proto!r}, expected 3; full reply: {hello!r}"


_proxy_clients = {}
_cluster_clients = {}


def _proxy_for(config):
    if config.label not in _proxy_clients:
        client = proxy_client(config)
        assert_protocol(client, config, "redis.Redis on slotgate")
        _proxy_clients[config.label] = client
    return _proxy_clients[config.label]


def _cluster_for(config):
    if config.label not in _cluster_clients:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in NODES],
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            **config.kwargs,
        )
        node = client.get_default_node()
        assert_protocol(node.redis_connection, config, "RedisCluster (direct)")
        _cluster_clients[config.label] = client
    return _cluster_clients[config.label]


@pytest.fixture(scope="session", autouse=True)
def _close_clients():
    yield
    for client in list(_proxy_clients.values()) + list(_cluster_clients.values()):
        try:
            client.close()
        except Exception:
            pass


class Keys:
    """Key names unique to one run, one side (slotgate or direct), one
    client configuration and one test.

    `k(name)` gives plain keys (spread over slots); `t(name)` gives keys that
    share one hash tag, for multi-key commands.
    """

    def __init__(self, side, label, test):
        self.base = f"{side}:{label}:{RUN}:{test}"

    def k(self, name):
        return f"{self.base}:{name}"

    def t(self, name):
        return f"{{{self.base}}}:{name}"

    def apart(self, name):
        """Two plain keys that are sure to be in different slots."""
        first = self.k(f"{name}:1")
        for i in range(2, 100):
            second = self.k(f"{name}:{i}")
            if key_slot(second.encode()) != key_slot(first.encode()):
                return first, second
        raise AssertionError("no two keys in different slots")


def _test_name(request):
    return request.node.originalname or request.node.name


@pytest.fixture(params=BASE_CONFIGS, ids=lambda c: c.label)
def config(request):
    return request.param


@pytest.fixture
def r(config):
    """slotgate through `redis.Redis`, once per protocol (bytes replies)."""
    return _proxy_for(config)


@pytest.fixture
def keys(request, config):
    return Keys("sg", config.label, _test_name(request))


class Pair:
    """The same redis-py settings against slotgate and against the cluster."""

    def __init__(self, config, test):
        self.config = config
        self.proxy = _proxy_for(config)
        self.direct = _cluster_for(config)
        self.proxy_keys = Keys("sg", config.label, test)
        self.direct_keys = Keys("dc", config.label, test)

    def run(self, ops):
        """Runs `ops(client, keys)` on both sides; returns both results,
        normalized (key prefixes masked, sets sorted)."""
        got = normalize(ops(self.proxy, self.proxy_keys), self.proxy_keys.base)
        want = normalize(ops(self.direct, self.direct_keys), self.direct_keys.base)
        return got, want

    def check(self, ops, what):
        got, want = self.run(ops)
        assert got == want, f"[{self.config.label}] {what}: slotgate and the cluster differ\n{describe_diff(got, want)}"
        return got


@pytest.fixture(params=ALL_CONFIGS, ids=lambda c: c.label)
def pair(request):
    return Pair(request.param, _test_name(request))


def normalize(value, base):
    """Masks the side's key prefix and sorts unordered collections, so that
    results from slotgate and from the direct cluster compare equal."""
    if isinstance(value, bytes):
        return value.replace(base.encode(), b"<KEYS>")
    if isinstance(value, str):
        return value.replace(base, "<KEYS>")
    if isinstance(value, (set, frozenset)):
        return ("<set>", sorted((normalize(v, base) for v in value), key=repr))
    if isinstance(value, dict):
        return {normalize(k, base): normalize(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v, base) for v in value]
    if isinstance(value, tuple):
        return tuple(normalize(v, base) for v in value)
    if isinstance(value, Exception):
        return (type(value).__name__, normalize(str(value), base))
    return value


def describe_diff(got, want):
    """Where two normalized results first differ, for assertion messages."""
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                return f"first difference at step {i}:\n  slotgate: {g!r}\n  cluster:  {w!r}"
    return f"  slotgate: {got!r}\n  cluster:  {want!r}"
