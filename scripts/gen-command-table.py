#!/usr/bin/env python3
"""Generate src/command/table.rs from a live Redis server's COMMAND reply.

The key specs, arity, flags, ACL categories and request/response tips are
Redis's own (COMMAND INFO is the authority); this script only transcribes
them into Rust data. Rerun it against the Redis version slotgate targets:

    redis-server --port 17999 --save '' --daemonize yes
    python3 scripts/gen-command-table.py --port 17999 > src/command/table.rs
    redis-cli -p 17999 shutdown nosave

tests/command_table.rs checks the checked-in table against the running
cluster, so a table that drifts from the server fails the suite.
"""
import argparse
import socket
import sys


def read_reply(f):
    """A minimal RESP2 reader: enough for COMMAND's nested arrays."""
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise ValueError(f"unexpected reply line {line!r}")


def command(host, port, *args):
    with socket.create_connection((host, port)) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        return read_reply(s.makefile("rb"))


FLAGS = {
    "write": "WRITE", "readonly": "READONLY", "denyoom": "DENYOOM",
    "module": "MODULE", "admin": "ADMIN", "pubsub": "PUBSUB",
    "noscript": "NOSCRIPT", "blocking": "BLOCKING", "loading": "LOADING",
    "stale": "STALE", "skip_monitor": "SKIP_MONITOR",
    "skip_slowlog": "SKIP_SLOWLOG", "asking": "ASKING", "fast": "FAST",
    "no_auth": "NO_AUTH", "may_replicate": "MAY_REPLICATE",
    "no_mandatory_keys": "NO_MANDATORY_KEYS", "no_async_loading":
    "NO_ASYNC_LOADING", "no_multi": "NO_MULTI", "movablekeys": "MOVABLE_KEYS",
    "allow_busy": "ALLOW_BUSY",
}
KEY_FLAGS = {
    "RO": "RO", "RW": "RW", "OW": "OW", "RM": "RM", "access": "ACCESS",
    "update": "UPDATE", "insert": "INSERT", "delete": "DELETE",
    "not_key": "NOT_KEY", "incomplete": "INCOMPLETE",
    "variable_flags": "VARIABLE_FLAGS",
}
REQUEST_POLICY = {
    "all_nodes": "AllNodes", "all_shards": "AllShards",
    "multi_shard": "MultiShard", "special": "Special",
}
RESPONSE_POLICY = {
    "one_succeeded": "OneSucceeded", "all_succeeded": "AllSucceeded",
    "agg_logical_and": "AggLogicalAnd", "agg_logical_or": "AggLogicalOr",
    "agg_min": "AggMin", "agg_max": "AggMax", "agg_sum": "AggSum",
    "special": "Special",
}


def pairs(flat):
    return dict(zip(flat[::2], flat[1::2]))


def bits(names, table, module, wrapper):
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"unknown flag(s) {unknown}: extend the generator and src/command/spec.rs")
    parts = [f"{module}::{table[n]}" for n in names]
    return f"{wrapper}({' | '.join(parts) if parts else '0'})"


def acl_bits(cats):
    names = {c.lstrip("@"): c.lstrip("@").upper() for c in cats}
    return bits(list(names), names, "a", "Acl")


def key_spec(raw):
    spec = pairs(raw)
    bs = pairs(spec["begin_search"])
    fk = pairs(spec["find_keys"])
    if bs["type"] == "index":
        begin = f"Index({pairs(bs['spec'])['index']})"
    elif bs["type"] == "keyword":
        kw = pairs(bs["spec"])
        begin = f'Keyword {{ keyword: "{kw["keyword"]}", start_from: {kw["startfrom"]} }}'
    else:
        begin = "BeginSearch::Unknown"
    if fk["type"] == "range":
        r = pairs(fk["spec"])
        find = f"Range {{ last_key: {r['lastkey']}, key_step: {r['keystep']}, limit: {r['limit']} }}"
    elif fk["type"] == "keynum":
        k = pairs(fk["spec"])
        find = f"Keynum {{ keynum_idx: {k['keynumidx']}, first_key: {k['firstkey']}, key_step: {k['keystep']} }}"
    else:
        find = "FindKeys::Unknown"
    flags = bits(spec.get("flags", []), KEY_FLAGS, "k", "KeyFlags")
    return f"KeySpec {{ begin: {begin}, find: {find}, flags: {flags} }}"


def tips(raw):
    request, response, nondet = "Default", "Default", "false"
    for tip in raw:
        if tip.startswith("request_policy:"):
            request = REQUEST_POLICY[tip.split(":", 1)[1]]
        elif tip.startswith("response_policy:"):
            response = RESPONSE_POLICY[tip.split(":", 1)[1]]
        elif tip.startswith("nondeterministic_output"):
            nondet = "true"
        else:
            sys.exit(f"unknown tip {tip!r}")
    if (request, response, nondet) == ("Default", "Default", "false"):
        return "Tips::NONE"
    return (f"Tips {{ request: RequestPolicy::{request}, response: ResponsePolicy::{response}, "
            f"nondeterministic: {nondet} }}")


def render(cmd, indent):
    name, arity, flags, _first, _last, _step, acl, tip_list, specs, subs = cmd[:10]
    pad = " " * indent
    out = [f'{pad}Command {{ name: "{name.lower()}", arity: {arity}, '
           f"flags: {bits(flags, FLAGS, 'f', 'Flags')}, acl: {acl_bits(acl)},"]
    keys = "&[]" if not specs else "&[\n" + "".join(
        f"{pad}        {key_spec(s)},\n" for s in specs) + f"{pad}    ]"
    if not subs:
        out.append(f"{pad}    tips: {tips(tip_list)}, key_specs: {keys}, subcommands: &[] }},")
        return out
    out.append(f"{pad}    tips: {tips(tip_list)}, key_specs: {keys}, subcommands: &[")
    for sub in sorted(subs, key=lambda c: c[0]):
        out.extend(render(sub, indent + 8))
    out.append(f"{pad}    ] }},")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    version = pairs_info(command(args.host, args.port, "INFO", "server"))["redis_version"]
    commands = sorted(command(args.host, args.port, "COMMAND"), key=lambda c: c[0])
    print("// @generated by scripts/gen-command-table.py from `COMMAND` of")
    print(f"// redis-server {version}. Do not edit by hand: rerun the script.")
    print("#![cfg_attr(rustfmt, rustfmt_skip)]")
    print()
    print("use super::spec::{flag as f, acl as a, key as k, *};")
    print("use BeginSearch::{Index, Keyword};")
    print("use FindKeys::{Keynum, Range};")
    print()
    print(f'/// The Redis version this table was generated from.')
    print(f'pub const REDIS_VERSION: &str = "{version}";')
    print()
    print("/// Every command of that version, sorted by name.")
    print("pub static COMMANDS: &[Command] = &[")
    for cmd in commands:
        print("\n".join(render(cmd, 4)))
    print("];")


def pairs_info(text):
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


if __name__ == "__main__":
    main()
