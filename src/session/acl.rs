//! Client users, as Redis ACL users: who may log in with which password,
//! and which commands and keys each may then use. Built once from the
//! `[[users]]` of the configuration; the session asks [`User::may_run`] and
//! [`User::may_access`] before it routes a command.
//!
//! A subset of Redis's rules: commands and categories, key patterns. Channels
//! are not restricted (every user has Redis's `allchannels`), and only
//! SHA-256 digests of passwords are kept, as Redis keeps them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::command::{self, Command, Entry, spec::acl as category};

/// A password as the configuration gives it.
#[derive(Debug, Clone, Copy)]
pub enum Password<'a> {
    Plain(&'a str),
    /// Its SHA-256 in hex, like ACL's `#<hash>`.
    Sha256(&'a str),
}

/// A configuration mistake, naming the user (and the rule) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user {user:?}: {problem}")]
pub struct AclError {
    user: String,
    problem: String,
}

/// Every user clients may log in as; `default` always among them.
#[derive(Debug)]
pub struct Users {
    default: Arc<User>,
    by_name: HashMap<Box<[u8]>, Arc<User>>,
}

/// One user, its rules compiled.
#[derive(Debug)]
pub struct User {
    pub name: Arc<str>,
    /// May log in (ACL `on`); a disabled user is refused whatever the password.
    pub enabled: bool,
    /// Any password is taken (Redis's `nopass`): only the default user
    /// without `requirepass`.
    nopass: bool,
    passwords: Digests,
    /// Full names (`get`, `config|get`) of the commands it may run, sorted,
    /// unless it may run them all.
    commands: Option<Box<[&'static str]>>,
    /// Patterns its keys must match, unless any key will do.
    keys: Option<Box<[Box<[u8]>]>>,
    /// Every command and every key: nothing to check per command.
    pub unrestricted: bool,
}

/// SHA-256 digests, never printed.
struct Digests(Vec<[u8; 32]>);

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({} passwords)", self.0.len())
    }
}

impl Users {
    /// The users of `[[users]]`. Without one named `default`, the default
    /// user is Redis's: every command and key, with `requirepass` as its
    /// password, or `nopass` when there is none.
    pub fn new(requirepass: Option<&str>, users: Vec<User>) -> Result<Users, AclError> {
        let mut by_name = HashMap::new();
        for user in users {
            let name = user.name.clone();
            if by_name.insert(name.as_bytes().into(), Arc::new(user)).is_some() {
                return Err(AclError::of(&name, "defined twice".into()));
            }
        }
        let default = match by_name.get(&b"default"[..]) {
            Some(_) if requirepass.is_some() => {
                let problem = "requirepass must be empty when [[users]] defines the default user".into();
                return Err(AclError::of("default", problem));
            }
            Some(default) => default.clone(),
            None => {
                let password = requirepass.map(|p| Digests(vec![sha256(p.as_bytes())]));
                let default = Arc::new(User {
                    nopass: password.is_none(),
                    passwords: password.unwrap_or(Digests(Vec::new())),
                    commands: None,
                    keys: None,
                    unrestricted: true,
                    ..User::restricted("default", true)
                });
                by_name.insert(b"default"[..].into(), default.clone());
                default
            }
        };
        Ok(Users { default, by_name })
    }

    /// Nobody may log in: for settings that were never validated.
    pub fn nobody() -> Users {
        let default = Arc::new(User::restricted("default", false));
        Users { by_name: HashMap::from([(b"default"[..].into(), default.clone())]), default }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    pub fn default_user(&self) -> &Arc<User> {
        &self.default
    }

    /// The user a new client (or one after RESET) is, without AUTH: the
    /// default user, when it needs no password.
    pub fn without_auth(&self) -> Option<Arc<User>> {
        Some(self.default.clone()).filter(|user| user.nopass && user.enabled)
    }

    /// The user `name`, if it exists, is enabled and `password` is one of
    /// its own. The password is hashed first whatever the name, so that the
    /// time taken does not tell which users exist.
    pub fn log_in(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let digest = sha256(password);
        let user = self.by_name.get(name)?;
        let right = user.nopass || user.passwords.0.iter().any(|wanted| same_secret(wanted, &digest));
        (right && user.enabled).then(|| user.clone())
    }
}

impl User {
    /// A user of `[[users]]`: `rules` are applied in order, as by
    /// `ACL SETUSER`, to a user that starts with no commands and no keys.
    pub fn parse(name: &str, enabled: bool, passwords: &[Password<'_>], rules: &str) -> Result<User, AclError> {
        let mut digests = Vec::new();
        for password in passwords {
            digests.push(match *password {
                Password::Plain(plain) => sha256(plain.as_bytes()),
                Password::Sha256(hex) => from_hex(hex)
                    .ok_or_else(|| AclError::of(name, "password_sha256 must be 64 hex digits (a SHA-256)".into()))?,
            });
        }
        if enabled && digests.is_empty() {
            let problem = "needs password or password_sha256 (or enabled = false)".into();
            return Err(AclError::of(name, problem));
        }
        let mut rules_so_far = Rules::default();
        for rule in rules.split_ascii_whitespace() {
            rules_so_far.apply(rule).map_err(|why| AclError::of(name, format!("rule {rule:?}: {why}")))?;
        }
        let (commands, keys) = rules_so_far.finish();
        Ok(User {
            passwords: Digests(digests),
            unrestricted: commands.is_none() && keys.is_none(),
            commands,
            keys,
            ..User::restricted(name, enabled)
        })
    }

    /// No password, no commands, no keys.
    fn restricted(name: &str, enabled: bool) -> User {
        User {
            name: name.into(),
            enabled,
            nopass: false,
            passwords: Digests(Vec::new()),
            commands: Some(Box::default()),
            keys: Some(Box::default()),
            unrestricted: false,
        }
    }

    /// May it run `command` (a subcommand for containers)? AUTH, HELLO,
    /// QUIT and RESET are every user's, as in Redis.
    pub fn may_run(&self, command: &Command) -> bool {
        match &self.commands {
            None => true,
            Some(allowed) => command.runs_before_auth() || allowed.binary_search(&command.name).is_ok(),
        }
    }

    /// Does any key do, so that [`User::may_access`] need not be asked?
    pub fn all_keys(&self) -> bool {
        self.keys.is_none()
    }

    pub fn may_access(&self, key: &[u8]) -> bool {
        match &self.keys {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| glob_match(pattern, key)),
        }
    }
}

impl AclError {
    fn of(user: &str, problem: String) -> AclError {
        AclError { user: user.into(), problem }
    }
}

/// What the rules have made of a user so far.
struct Rules {
    commands: BTreeSet<&'static str>,
    /// `None`: every key (`allkeys`, `~*`).
    patterns: Option<Vec<Box<[u8]>>>,
}

impl Default for Rules {
    /// No commands and no keys, as a new user in Redis.
    fn default() -> Rules {
        Rules { commands: BTreeSet::new(), patterns: Some(Vec::new()) }
    }
}

impl Rules {
    fn apply(&mut self, rule: &str) -> Result<(), &'static str> {
        match rule.to_ascii_lowercase().as_str() {
            "allcommands" => return self.category("all", true),
            "nocommands" => return self.category("all", false),
            "allkeys" => {
                self.patterns = None;
                return Ok(());
            }
            "resetkeys" => {
                self.patterns = Some(Vec::new());
                return Ok(());
            }
            "on" | "off" => return Err("use enabled = true or false"),
            "nopass" | "resetpass" => return Err(PASSWORDS),
            "allchannels" | "resetchannels" => return Err(CHANNELS),
            _ => {}
        }
        if let Some(rest) = rule.strip_prefix('+') {
            return self.commands_or_category(rest, true);
        }
        if let Some(rest) = rule.strip_prefix('-') {
            return self.commands_or_category(rest, false);
        }
        if let Some(pattern) = rule.strip_prefix('~') {
            return self.key_pattern(pattern);
        }
        match rule.chars().next() {
            Some('%') => Err("read and write key permissions (%R~, %W~) are not supported: use ~pattern"),
            Some('&') => Err(CHANNELS),
            Some('>' | '<' | '#' | '!') => Err(PASSWORDS),
            _ => Err("not a rule slotgate supports"),
        }
    }

    /// `+`/`-` followed by `@category`, `command` or `container|subcommand`.
    fn commands_or_category(&mut self, rest: &str, allow: bool) -> Result<(), &'static str> {
        match rest.strip_prefix('@') {
            Some(name) => self.category(name, allow),
            None => self.command(rest, allow),
        }
    }

    fn category(&mut self, name: &str, allow: bool) -> Result<(), &'static str> {
        let lower = name.to_ascii_lowercase();
        let bit = match lower.as_str() {
            "all" => None,
            _ => {
                let found = category::NAMES.iter().find(|(_, known)| *known == lower);
                Some(found.ok_or("no such command category")?.0)
            }
        };
        let listed = |command: &Command| bit.is_none_or(|bit| command.acl.contains(bit));
        // Like Redis: a container in the category brings all its
        // subcommands, and each subcommand in it comes on its own.
        for entry in command::all() {
            if listed(entry.command) {
                self.set(entry, allow);
            }
            for sub in entry.subcommands().iter().filter(|sub| listed(sub.command)) {
                self.set(sub, allow);
            }
        }
        Ok(())
    }

    fn command(&mut self, name: &str, allow: bool) -> Result<(), &'static str> {
        let (top, sub) = match name.split_once('|') {
            Some((top, sub)) => (top, Some(sub)),
            None => (name, None),
        };
        let entry = command::lookup_name(top.as_bytes()).ok_or("no such command")?;
        let entry = match sub {
            None => entry,
            Some(_) if entry.subcommands().is_empty() => {
                return Err("command|first-argument rules are not supported, only container|subcommand");
            }
            Some(sub) => entry.subcommand(sub.as_bytes()).ok_or("no such subcommand")?,
        };
        self.set(entry, allow);
        Ok(())
    }

    /// A command, with all its subcommands if it is a container.
    fn set(&mut self, entry: &'static Entry, allow: bool) {
        for command in std::iter::once(entry).chain(entry.subcommands()).map(|e| e.command) {
            if allow {
                self.commands.insert(command.name);
            } else {
                self.commands.remove(command.name);
            }
        }
    }

    fn key_pattern(&mut self, pattern: &str) -> Result<(), &'static str> {
        let Some(patterns) = &mut self.patterns else {
            return Err("a pattern after allkeys (or ~*) has no effect: put resetkeys before it");
        };
        if pattern == "*" {
            self.patterns = None;
        } else {
            patterns.push(pattern.as_bytes().into());
        }
        Ok(())
    }

    /// The allowed commands (`None`: all) and key patterns (`None`: all keys).
    #[allow(clippy::type_complexity)]
    fn finish(self) -> (Option<Box<[&'static str]>>, Option<Box<[Box<[u8]>]>>) {
        let every = command::all().map(|entry| 1 + entry.subcommands().len()).sum::<usize>();
        let commands = (self.commands.len() < every).then(|| self.commands.into_iter().collect());
        (commands, self.patterns.map(Vec::into_boxed_slice))
    }
}

const PASSWORDS: &str = "passwords go in password or password_sha256, not in rules";
const CHANNELS: &str =
    "channels are not restricted by slotgate (every user may use every channel): leave channel rules out";

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Compares without an early exit, so that the time taken does not tell
/// how much of a guess was right.
fn same_secret(wanted: &[u8], given: &[u8]) -> bool {
    let differ = given.iter().zip(wanted.iter().cycle()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    differ == 0 && given.len() == wanted.len()
}

/// Does `key` match `pattern`, as Redis's `stringmatchlen` decides: `*`,
/// `?`, `[a-z]`, `[^x]`, `\` escapes, case-sensitive.
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    let mut give_up = false;
    matches(pattern, key, &mut give_up)
}

/// One step of [`glob_match`], Redis's algorithm token by token (its
/// quirks too: an empty key matches only an empty pattern). `give_up`:
/// the rest after a `*` matched nowhere, so no earlier `*` can help.
fn matches(mut pattern: &[u8], mut key: &[u8], give_up: &mut bool) -> bool {
    while let (Some(&token), Some(&byte)) = (pattern.first(), key.first()) {
        match token {
            b'*' => {
                while pattern.get(1) == Some(&b'*') {
                    pattern = &pattern[1..];
                }
                if pattern.len() == 1 {
                    return true;
                }
                while !key.is_empty() {
                    if matches(&pattern[1..], key, give_up) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                    key = &key[1..];
                }
                *give_up = true;
                return false;
            }
            b'?' => pattern = &pattern[1..],
            b'[' => {
                let (matched, rest) = class(&pattern[1..], byte);
                if !matched {
                    return false;
                }
                pattern = rest;
            }
            b'\\' if pattern.len() >= 2 => {
                if pattern[1] != byte {
                    return false;
                }
                pattern = &pattern[2..];
            }
            literal => {
                if literal != byte {
                    return false;
                }
                pattern = &pattern[1..];
            }
        }
        key = &key[1..];
        if key.is_empty() {
            while pattern.first() == Some(&b'*') {
                pattern = &pattern[1..];
            }
        }
    }
    pattern.is_empty() && key.is_empty()
}

/// A `[...]` class (`pattern` starts after the `[`) against `byte`:
/// whether it matches, and the pattern after the class. An unclosed class
/// runs to the end of the pattern, as in Redis.
fn class(mut pattern: &[u8], byte: u8) -> (bool, &[u8]) {
    let negated = pattern.first() == Some(&b'^');
    if negated {
        pattern = &pattern[1..];
    }
    let mut matched = false;
    loop {
        match *pattern {
            [b'\\', escaped, ..] => {
                matched |= escaped == byte;
                pattern = &pattern[2..];
            }
            [b']', ..] => return (matched != negated, &pattern[1..]),
            [] => return (matched != negated, pattern),
            // Redis compares C chars, signed: bytes from 0x80 sort first.
            [start, b'-', end, ..] => {
                let (start, end, byte) = (start as i8, end as i8, byte as i8);
                matched |= (start.min(end)..=start.max(end)).contains(&byte);
                pattern = &pattern[3..];
            }
            [other, ..] => {
                matched |= other == byte;
                pattern = &pattern[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests;
