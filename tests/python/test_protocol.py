"""The connection itself: which protocol redis-py negotiates with slotgate,
that RESP3 replies pass through unchanged, and the commands slotgate
answers on its own (PING, ECHO, HELLO, SELECT, CLIENT ..., AUTH), plus the
keyless commands it forwards to any master (TIME, COMMAND)."""

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry
from redis.utils import str_if_bytes

from conftest import (
    BASE_CONFIGS,
    DEFAULT,
    NODES,
    _cluster_for,
    negotiated_protocol,
    node_client,
    proxy_client,
)


def test_redis_py_default_protocol_is_resp3():
    """The acceptance asks for 'redis-py with its default protocol' to mean
    RESP3 (redis-py 8). If the installed redis-py defaults to RESP2, the
    'default' runs of this suite would only repeat the protocol=2 runs."""
    client = proxy_client(DEFAULT)
    try:
        protocol, hello = negotiated_protocol(client)
        assert protocol == 3, (
            f"redis-py {redis.__version__} negotiated RESP{protocol} with slotgate when no protocol was given; "
            "this suite expects redis-py >= 8, whose default is RESP3, so the 'default' parametrization "
            "is NOT exercising RESP3 (install redis>=8.0 from tests/python/requirements.txt)"
        )
        assert hello is not None and hello.get(b"proto") == 3, f"HELLO reply on the default connection: {hello!r}"
        assert hello.get(b"mode") == b"standalone", f"slotgate must present itself as standalone: {hello!r}"
    finally:
        client.close()


def test_negotiated_protocol(config):
    client = proxy_client(config)
    try:
        protocol, hello = negotiated_protocol(client)
        assert protocol == config.expected_protocol, f"[{config.label}] negotiated RESP{protocol}"
        if protocol == 2:
            assert hello is None, f"[{config.label}] a RESP2 client sends no HELLO, yet got {hello!r}"
        else:
            assert hello[b"proto"] == 3, f"[{config.label}] HELLO reply: {hello!r}"
        assert client.ping() is True
    finally:
        client.close()


def raw(client, *args):
    """Sends one command on a pooled connection and returns what the parser
    read, without redis-py's per-command response callbacks."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        client.connection_pool.release(connection)


def owner_of(key, config):
    """A plain client on the master that serves `key`'s slot."""
    node = _cluster_for(config).get_node_from_key(key)
    return node_client(node.host, node.port, config)


# Lua can answer with every RESP3 type once it calls redis.setresp(3); on a
# RESP2 connection Redis downgrades them. Either way slotgate must pass the
# node's reply through unchanged.
RAW_COMMANDS = [
    ("HGETALL", "{k}:h"),
    ("ZRANGE", "{k}:z", 0, -1, "WITHSCORES"),
    ("ZSCORE", "{k}:z", "b"),
    ("SMEMBERS", "{k}:s"),
    ("SISMEMBER", "{k}:s", "x"),
    ("GET", "{k}:missing"),
    ("LPOS", "{k}:l", "nope"),
    ("XRANGE", "{k}:x", "-", "+"),
    ("XREAD", "STREAMS", "{k}:x", "0"),
    ("XINFO", "STREAM", "{k}:x"),
    ("EVAL", "redis.setresp(3); return {double=1.5}", 1, "{k}:h"),
    ("EVAL", "redis.setresp(3); return {map={a=1, b={1, 2}}}", 1, "{k}:h"),
    ("EVAL", "redis.setresp(3); return {set={a=true}}", 1, "{k}:h"),
    ("EVAL", "redis.setresp(3); return {big_number='123456789012345678901234567890'}", 1, "{k}:h"),
    ("EVAL", "redis.setresp(3); return {verbatim_string={format='txt', string='verbatim'}}", 1, "{k}:h"),
    ("EVAL", "redis.setresp(3); return true", 1, "{k}:h"),
    ("EVAL", "redis.setresp(3); return false", 1, "{k}:h"),
    ("EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", 1, "{k}:h"),
]


def test_raw_replies_are_the_nodes_replies(config, r, keys):
    """Every reply, RESP3 types included, is exactly what the master that
    owns the slot answers to the same command on a direct connection."""
    r.hset(keys.t("h"), mapping={"f1": "v1", "f2": "2"})
    r.zadd(keys.t("z"), {"a": 1, "b": 2.5})
    r.sadd(keys.t("s"), "x", "y")
    r.rpush(keys.t("l"), "a")
    r.xadd(keys.t("x"), {"f": "v"}, id="5-0")
    node = owner_of(keys.t("h"), config)
    try:
        for command in RAW_COMMANDS:
            # "{k}:name" stands for this test's tagged key "name".
            args = [keys.t(a[4:]) if isinstance(a, str) and a.startswith("{k}:") else a for a in command]
            got = raw(r, *args)
            want = raw(node, *args)
            assert got == want, (
                f"[{config.label}] {' '.join(map(str, command))}: slotgate's reply differs from the node's\n"
                f"  slotgate: {got!r}\n  node:     {want!r}"
            )
        # The shapes prove which protocol is on the wire.
        hgetall = raw(r, "HGETALL", keys.t("h"))
        zscore = raw(r, "ZSCORE", keys.t("z"), "b")
        if config.expected_protocol == 3:
            assert isinstance(hgetall, dict), f"[{config.label}] RESP3 HGETALL must be a map, got {hgetall!r}"
            assert zscore == 2.5, f"[{config.label}] RESP3 ZSCORE must be a double, got {zscore!r}"
        else:
            assert isinstance(hgetall, list), f"[{config.label}] RESP2 HGETALL must be an array, got {hgetall!r}"
            assert zscore == b"2.5", f"[{config.label}] RESP2 ZSCORE must be a bulk string, got {zscore!r}"
    finally:
        node.close()


def test_ping_and_echo(r, config):
    assert r.ping() is True
    # redis-py turns any PING reply into a bool; read the message raw.
    assert raw(r, "PING", "hello") == b"hello"
    assert r.echo("echo \x00 me") == b"echo \x00 me"
    assert r.echo(b"\xff\xfe") == b"\xff\xfe"


def test_client_name_and_id():
    for config in BASE_CONFIGS:
        client = proxy_client(config, single_connection_client=True)
        try:
            assert client.client_getname() is None, f"[{config.label}] a new connection has no name"
            assert client.client_setname("x") is True
            assert str_if_bytes(client.client_getname()) == "x", f"[{config.label}] CLIENT GETNAME after SETNAME x"
            assert client.client_setname("other-name") is True
            assert str_if_bytes(client.client_getname()) == "other-name"
            with pytest.raises(redis.ResponseError, match="cannot contain spaces"):
                client.client_setname("has space")
            client_id = client.client_id()
            assert isinstance(client_id, int) and client_id > 0, f"[{config.label}] CLIENT ID: {client_id!r}"
            other = proxy_client(config, single_connection_client=True)
            try:
                assert other.client_id() != client_id, f"[{config.label}] two connections share CLIENT ID {client_id}"
            finally:
                other.close()
        finally:
            client.close()


def test_client_name_from_the_constructor(config):
    client = proxy_client(config, client_name="legacy-app")
    try:
        assert str_if_bytes(client.client_getname()) == "legacy-app"
    finally:
        client.close()


def test_select(r, config):
    assert r.select(0) is True
    with pytest.raises(redis.ResponseError, match="SELECT is not allowed in cluster mode"):
        r.execute_command("SELECT", 1)
    assert r.ping() is True


def test_a_client_configured_with_db_1_gets_a_clear_error(config):
    client = proxy_client(config, db=1)
    try:
        with pytest.raises(redis.ResponseError, match="SELECT is not allowed in cluster mode"):
            client.ping()
    finally:
        client.close()


def test_hello(config):
    client = proxy_client(config, single_connection_client=True)
    try:
        if config.expected_protocol == 3:
            reply = client.execute_command("HELLO", 3)
            assert isinstance(reply, dict), f"[{config.label}] HELLO 3 must be a map, got {reply!r}"
        else:
            # HELLO 3 would switch this connection to RESP3 under redis-py's
            # RESP2 parser; HELLO 2 answers the same fields as a flat array.
            flat = client.execute_command("HELLO", 2)
            assert isinstance(flat, list) and len(flat) == 14, f"[{config.label}] HELLO 2: {flat!r}"
            reply = dict(zip(flat[::2], flat[1::2]))
        reply = {k.decode() if isinstance(k, bytes) else k: v for k, v in reply.items()}
        assert set(reply) == {"server", "version", "proto", "id", "mode", "role", "modules"}, reply
        assert reply["server"] == b"redis", reply
        assert reply["proto"] == config.expected_protocol, reply
        assert reply["mode"] == b"standalone", f"slotgate must look like one standalone server: {reply!r}"
        assert reply["role"] == b"master", reply
        assert reply["modules"] == [], reply
        assert reply["id"] == client.client_id(), f"HELLO id {reply['id']} != CLIENT ID"
        host, port = NODES[0]
        node = node_client(host, port)
        try:
            node_version = node.info("server")["redis_version"]
        finally:
            node.close()
        assert reply["version"] == node_version.encode(), f"HELLO version {reply['version']!r}, nodes run {node_version}"
        assert client.ping() is True
    finally:
        client.close()


def test_hello_options(config):
    client = proxy_client(config, single_connection_client=True)
    try:
        version = config.expected_protocol
        reply = client.execute_command("HELLO", version, "SETNAME", "named-by-hello")
        assert str_if_bytes(client.client_getname()) == "named-by-hello", f"[{config.label}] HELLO SETNAME"
        again = client.execute_command("HELLO")  # no version: the current protocol
        assert again == reply, f"[{config.label}] HELLO without arguments: {again!r}, before: {reply!r}"
        assert client.ping() is True
    finally:
        client.close()


def test_quit_then_redis_py_reconnects(config):
    client = proxy_client(config)
    try:
        assert client.execute_command("QUIT") is True
        # The server closed the connection after +OK; redis-py notices and reconnects.
        assert client.ping() is True
        assert client.echo("back") == b"back"
    finally:
        client.close()


def test_hello_with_an_unsupported_protocol(r):
    with pytest.raises(redis.ResponseError, match="unsupported protocol version"):
        r.execute_command("HELLO", 4)
    assert r.ping() is True


def test_auth_as_the_default_user(config):
    # The nodes have no password: like such a Redis, slotgate accepts the
    # default user (redis-py sends HELLO 3 AUTH ... or AUTH ... on connect).
    client = proxy_client(config, username="default", password="anything")
    try:
        assert client.ping() is True
    finally:
        client.close()
    # No retries: redis-py would otherwise back off and reconnect for seconds.
    client = proxy_client(config, username="nobody", password="x", retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()


def test_unknown_command(r, config):
    with pytest.raises(redis.ResponseError, match="unknown command") as error:
        r.execute_command("NOSUCHCOMMAND", "arg1")
    assert "nosuchcommand" in str(error.value).lower(), str(error.value)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    assert r.ping() is True


def test_keyless_commands_go_to_a_master(r, config):
    seconds, micros = r.time()
    assert seconds > 1_600_000_000 and 0 <= micros < 1_000_000, (seconds, micros)
    host, port = NODES[0]
    node = node_client(host, port, config)
    try:
        want = node.command_count()
    finally:
        node.close()
    assert r.command_count() == want, "COMMAND COUNT through slotgate differs from a node's"
    assert raw(r, "COMMAND", "INFO", "GET")[0][0] in (b"get", "get")
    assert r.ping() is True


def test_cluster_view_matches_crc16():
    """The slot arithmetic the other tests rely on (redis.crc.key_slot)
    agrees with the cluster's own CLUSTER KEYSLOT."""
    host, port = NODES[0]
    node = node_client(host, port)
    try:
        for key in ("a", "{user:1001}:profile", "x" * 300, "{}empty-tag", "\xff\x00binary"):
            assert node.cluster("KEYSLOT", key) == key_slot(key.encode()), key
    finally:
        node.close()
