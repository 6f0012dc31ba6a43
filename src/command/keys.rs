//! Finding a request's keys from its command's key specs, following Redis's
//! `getKeysUsingKeySpecs` step by step, plus `sortGetKeys` for SORT's STORE.
//!
//! When the arguments make a spec invalid (a bad `numkeys`, a missing key),
//! Redis finds no keys and lets the command fail with its own error; slotgate
//! reports [`InvalidKeys`] so the command goes to any master, which answers
//! with that same error.

use smallvec::SmallVec;

use super::policy::KeyFinder;
use super::spec::{BeginSearch, Command, FindKeys};
use crate::resp::{Request, parse_i64};

/// Argument positions of the keys of one request, in the order Redis lists them.
pub type KeyPositions = SmallVec<[usize; 4]>;

/// The arguments do not fit the key specs: Redis itself would find no keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKeys;

/// Fills `out` with the positions of the keys of `req`.
pub fn key_positions(
    command: &Command,
    finder: KeyFinder,
    req: &Request,
    out: &mut KeyPositions,
) -> Result<(), InvalidKeys> {
    out.clear();
    match finder {
        KeyFinder::Specs => spec_positions(command, req, out),
        KeyFinder::Sort => {
            sort_positions(req, out);
            Ok(())
        }
    }
}

fn spec_positions(command: &Command, req: &Request, out: &mut KeyPositions) -> Result<(), InvalidKeys> {
    let argc = req.argc() as i64;
    for spec in command.key_specs {
        let first = match spec.begin {
            BeginSearch::Index(index) => i64::from(index),
            BeginSearch::Keyword { keyword, start_from } => {
                match keyword_position(req, keyword, i64::from(start_from)) {
                    Some(at) => at + 1,
                    // An optional keyword that is absent: this spec has no keys.
                    None => continue,
                }
            }
            BeginSearch::Unknown => return Err(InvalidKeys),
        };
        let (first, last, step) = match spec.find {
            FindKeys::Range { last_key, key_step, limit } => {
                let (last_key, limit) = (i64::from(last_key), i64::from(limit));
                let last = if last_key >= 0 {
                    first + last_key
                } else if limit == 0 {
                    argc + last_key
                } else {
                    first + ((argc - first) / limit + last_key)
                };
                (first, last, i64::from(key_step))
            }
            FindKeys::Keynum { keynum_idx, first_key, key_step } => {
                let count_at = first + i64::from(keynum_idx);
                let count = usize::try_from(count_at)
                    .ok()
                    .and_then(|at| req.arg(at))
                    .and_then(parse_i64)
                    // More keys than arguments is invalid anyway; the bound
                    // also keeps the arithmetic below from overflowing.
                    .filter(|n| (0..=argc).contains(n))
                    .ok_or(InvalidKeys)?;
                let first = first + i64::from(first_key);
                (first, first + count - 1, i64::from(key_step))
            }
            FindKeys::Unknown => return Err(InvalidKeys),
        };
        if last >= argc || last < first || first >= argc || first < 1 || step < 1 {
            return Err(InvalidKeys);
        }
        let mut at = first;
        while at <= last {
            out.push(at as usize);
            at += step;
        }
    }
    Ok(())
}

/// Where `keyword` is, searched like Redis: forward from `start_from`, or
/// backward from `argc + start_from` when it is negative; never the name.
fn keyword_position(req: &Request, keyword: &str, start_from: i64) -> Option<i64> {
    let argc = req.argc() as i64;
    let (start, end) = if start_from > 0 { (start_from, argc - 1) } else { (argc + start_from, 0) };
    let mut at = start;
    while at != end {
        if at >= argc || at < 1 {
            return None;
        }
        if req.arg(at as usize).is_some_and(|arg| arg.eq_ignore_ascii_case(keyword.as_bytes())) {
            return Some(at);
        }
        at += if start <= end { 1 } else { -1 };
    }
    None
}

/// SORT key [BY p] [LIMIT o c] [GET p ...] [STORE dest]: the sorted key and the
/// last STORE destination. BY and GET patterns are not keys.
fn sort_positions(req: &Request, out: &mut KeyPositions) {
    out.push(1);
    let mut store = None;
    let mut at = 2;
    while let Some(arg) = req.arg(at) {
        if arg.eq_ignore_ascii_case(b"limit") {
            at += 2;
        } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
            at += 1;
        } else if arg.eq_ignore_ascii_case(b"store") && at + 1 < req.argc() {
            store = Some(at + 1);
        }
        at += 1;
    }
    out.extend(store);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Route, lookup_name};

    fn keys(args: &[&str]) -> Result<Vec<String>, InvalidKeys> {
        let req = Request::from_args(args);
        let entry = lookup_name(args[0].as_bytes()).unwrap_or_else(|| panic!("{} unknown", args[0]));
        let (command, finder) = match (args.get(1), entry.command.subcommands.is_empty()) {
            (Some(sub), false) => (entry.command.subcommand(sub.as_bytes()).unwrap(), KeyFinder::Specs),
            _ => match entry.route {
                Route::Keyed(keyed) => (entry.command, keyed.finder),
                _ => (entry.command, KeyFinder::Specs),
            },
        };
        let mut out = KeyPositions::new();
        key_positions(command, finder, &req, &mut out)?;
        Ok(out.iter().map(|&i| args[i].to_string()).collect())
    }

    #[test]
    fn fixed_and_ranged_keys() {
        assert_eq!(keys(&["GET", "a"]), Ok(vec!["a".into()]));
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(keys(&["DEL", "a", "b", "c"]), Ok(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(keys(&["BITOP", "AND", "d", "x", "y"]), Ok(vec!["d".into(), "x".into(), "y".into()]));
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), Ok(vec!["k".into()]));
        assert_eq!(keys(&["LMOVE", "a", "b", "LEFT", "RIGHT"]), Ok(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn keynum_keys() {
        assert_eq!(keys(&["EVAL", "return 1", "2", "a", "b", "x"]), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(keys(&["EVAL", "return 1", "0"]), Err(InvalidKeys));
        assert_eq!(keys(&["EVAL", "return 1", "-1"]), Err(InvalidKeys));
        assert_eq!(keys(&["EVAL", "return 1", "3", "a"]), Err(InvalidKeys));
        assert_eq!(keys(&["EVAL", "return 1", "9223372036854775807", "a"]), Err(InvalidKeys));
        assert_eq!(keys(&["ZUNIONSTORE", "d", "9223372036854775807", "a"]), Err(InvalidKeys));
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            Ok(vec!["d".into(), "a".into(), "b".into()])
        );
        assert_eq!(keys(&["LMPOP", "2", "a", "b", "LEFT"]), Ok(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn keyword_keys() {
        assert_eq!(keys(&["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(keys(&["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "dst"]), Ok(vec!["g".into(), "dst".into()]));
        assert_eq!(keys(&["GEORADIUS", "g", "0", "0", "1", "km"]), Ok(vec!["g".into()]));
    }

    #[test]
    fn sort_finds_its_store_key_but_not_patterns() {
        assert_eq!(keys(&["SORT", "k", "BY", "store", "GET", "#", "STORE", "d"]), Ok(vec!["k".into(), "d".into()]));
        assert_eq!(keys(&["SORT", "k", "LIMIT", "0", "10", "ALPHA"]), Ok(vec!["k".into()]));
        assert_eq!(keys(&["SORT_RO", "k"]), Ok(vec!["k".into()]));
    }
}
