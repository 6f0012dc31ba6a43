//! The checked-in command table against the real thing: every command and
//! subcommand of the running redis-server, with its arity, flags, ACL
//! categories, tips and key specs, must match `COMMAND` exactly, both ways.
//! When Redis changes, regenerate with scripts/gen-command-table.py.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;

use redis::Value;
use slotgate::command::spec::{BeginSearch, Command, FindKeys, RequestPolicy, ResponsePolicy, acl, flag, key};
use slotgate::command::{COMMANDS, REDIS_VERSION};
use support::{Node, TempDir, free_port};

/// A command as text, the same shape for both sides of the comparison.
fn describe(c: &Command) -> String {
    let flags: Vec<&str> = flag::NAMES.iter().filter(|(bit, _)| c.flags.contains(*bit)).map(|(_, n)| *n).collect();
    let mut acls: Vec<&str> = acl::NAMES.iter().filter(|(bit, _)| c.acl.contains(*bit)).map(|(_, n)| *n).collect();
    acls.sort_unstable();
    let specs: Vec<String> = c
        .key_specs
        .iter()
        .map(|s| {
            let mut kf: Vec<&str> =
                key::NAMES.iter().filter(|(bit, _)| s.flags.contains(*bit)).map(|(_, n)| *n).collect();
            kf.sort_unstable();
            let begin = match s.begin {
                BeginSearch::Index(i) => format!("index {i}"),
                BeginSearch::Keyword { keyword, start_from } => format!("keyword {keyword} {start_from}"),
                BeginSearch::Unknown => "unknown".into(),
            };
            let find = match s.find {
                FindKeys::Range { last_key, key_step, limit } => format!("range {last_key} {key_step} {limit}"),
                FindKeys::Keynum { keynum_idx, first_key, key_step } => {
                    format!("keynum {keynum_idx} {first_key} {key_step}")
                }
                FindKeys::Unknown => "unknown".into(),
            };
            format!("{begin}/{find}/{}", kf.join(","))
        })
        .collect();
    let request = match c.tips.request {
        RequestPolicy::Default => "",
        RequestPolicy::AllNodes => "all_nodes",
        RequestPolicy::AllShards => "all_shards",
        RequestPolicy::MultiShard => "multi_shard",
        RequestPolicy::Special => "special",
    };
    let response = match c.tips.response {
        ResponsePolicy::Default => "",
        ResponsePolicy::OneSucceeded => "one_succeeded",
        ResponsePolicy::AllSucceeded => "all_succeeded",
        ResponsePolicy::AggLogicalAnd => "agg_logical_and",
        ResponsePolicy::AggLogicalOr => "agg_logical_or",
        ResponsePolicy::AggMin => "agg_min",
        ResponsePolicy::AggMax => "agg_max",
        ResponsePolicy::AggSum => "agg_sum",
        ResponsePolicy::Special => "special",
    };
    format!(
        "arity {} flags [{}] acl [{}] tips [{request}|{response}|{}] keys [{}]",
        c.arity,
        flags.join(","),
        acls.join(","),
        c.tips.nondeterministic,
        specs.join("; ")
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

fn list(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        other => panic!("not a list: {other:?}"),
    }
}

fn pairs(v: &Value) -> BTreeMap<String, &Value> {
    list(v).chunks(2).map(|kv| (text(&kv[0]), &kv[1])).collect()
}

/// The same description, built from one `COMMAND` entry of the server.
fn describe_live(entry: &[Value]) -> String {
    let arity = text(&entry[1]);
    let server_flags: Vec<String> = list(&entry[2]).iter().map(text).collect();
    let flags: Vec<&str> =
        flag::NAMES.iter().map(|(_, n)| *n).filter(|n| server_flags.iter().any(|f| f == n)).collect();
    assert_eq!(flags.len(), server_flags.len(), "unknown flag in {server_flags:?}");
    let mut acls: Vec<String> = list(&entry[6]).iter().map(|a| text(a).trim_start_matches('@').to_string()).collect();
    acls.sort_unstable();
    let tips: Vec<String> = list(&entry[7]).iter().map(text).collect();
    let tip = |prefix: &str| tips.iter().find_map(|t| t.strip_prefix(prefix)).unwrap_or("").to_string();
    let nondeterministic = tips.iter().any(|t| t.starts_with("nondeterministic_output"));
    let specs: Vec<String> = list(&entry[8])
        .iter()
        .map(|spec| {
            let spec = pairs(spec);
            let mut kf: Vec<String> = list(spec["flags"]).iter().map(text).collect();
            kf.sort_unstable();
            let bs = pairs(spec["begin_search"]);
            let bspec = pairs(bs["spec"]);
            let begin = match text(bs["type"]).as_str() {
                "index" => format!("index {}", text(bspec["index"])),
                "keyword" => format!("keyword {} {}", text(bspec["keyword"]), text(bspec["startfrom"])),
                _ => "unknown".into(),
            };
            let fk = pairs(spec["find_keys"]);
            let fspec = pairs(fk["spec"]);
            let find = match text(fk["type"]).as_str() {
                "range" => {
                    format!("range {} {} {}", text(fspec["lastkey"]), text(fspec["keystep"]), text(fspec["limit"]))
                }
                "keynum" => {
                    format!(
                        "keynum {} {} {}",
                        text(fspec["keynumidx"]),
                        text(fspec["firstkey"]),
                        text(fspec["keystep"])
                    )
                }
                _ => "unknown".into(),
            };
            format!("{begin}/{find}/{}", kf.join(","))
        })
        .collect();
    format!(
        "arity {arity} flags [{}] acl [{}] tips [{}|{}|{nondeterministic}] keys [{}]",
        flags.join(","),
        acls.join(","),
        tip("request_policy:"),
        tip("response_policy:"),
        specs.join("; ")
    )
}

fn collect_live(entries: &[Value], out: &mut BTreeMap<String, String>) {
    for entry in entries {
        let entry = list(entry);
        out.insert(text(&entry[0]).to_lowercase(), describe_live(entry));
        collect_live(list(&entry[9]), out);
    }
}

fn collect_table(commands: &[Command], out: &mut BTreeMap<String, String>) {
    for c in commands {
        out.insert(c.name.to_string(), describe(c));
        collect_table(c.subcommands, out);
    }
}

#[test]
fn the_table_matches_the_servers_command_reply() {
    let dir = TempDir::new("command-table");
    let node = Node::spawn(free_port(), dir.path(), &[]);
    let mut c = node.connection();
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap().trim().to_string();
    let reply: Value = redis::cmd("COMMAND").query(&mut c).unwrap();
    let mut live = BTreeMap::new();
    collect_live(list(&reply), &mut live);
    let mut table = BTreeMap::new();
    collect_table(COMMANDS, &mut table);
    assert_eq!(version, REDIS_VERSION, "the table was generated from another Redis version: regenerate it");
    let missing: Vec<&String> = live.keys().filter(|name| !table.contains_key(*name)).collect();
    let extra: Vec<&String> = table.keys().filter(|name| !live.contains_key(*name)).collect();
    assert!(missing.is_empty(), "commands the server has and the table lacks: {missing:?}");
    assert!(extra.is_empty(), "commands in the table the server does not have: {extra:?}");
    for (name, want) in &live {
        assert_eq!(&table[name], want, "{name}");
    }
    assert!(live.len() > 350, "commands and subcommands compared: {}", live.len());
}
