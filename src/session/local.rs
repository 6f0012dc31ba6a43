//! Commands slotgate answers itself, about its own client: PING, ECHO,
//! HELLO, AUTH, SELECT, QUIT, RESET, CLUSTER KEYSLOT and CLIENT
//! ID/GETNAME/SETNAME/SETINFO; the transaction commands are passed on to
//! [`super::transaction`].
//! Replies follow Redis 7 word for word, in the client's protocol.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Session, User, clients};
use crate::command::{Command, Local, REDIS_VERSION};
use crate::error::ClientError;
use crate::resp::{Protocol, Request, parse_i64, write};

impl Session {
    /// Answers `request`, a `command` slotgate runs itself.
    pub(super) fn local(&mut self, local: Local, command: &'static Command, request: Request) {
        let request = &request;
        let mut out = std::mem::take(&mut self.local);
        let result = match local {
            Local::Ping if self.client.protocol == Protocol::Resp2 && self.subs.active() => {
                // Subscribed RESP2 clients get PING's answer as a message-like array.
                write::array(&mut out, 2);
                write::bulk(&mut out, b"pong");
                write::bulk(&mut out, request.arg(1).unwrap_or_default());
                Ok(())
            }
            Local::Ping => {
                match request.arg(1) {
                    None => write::simple(&mut out, "PONG"),
                    Some(_) if request.argc() > 2 => return self.reply_error(ClientError::WrongArity("ping")),
                    Some(message) => write::bulk(&mut out, message),
                }
                Ok(())
            }
            Local::Echo => {
                write::bulk(&mut out, request.arg(1).unwrap_or_default());
                Ok(())
            }
            Local::Hello => self.hello(request, &mut out),
            Local::Auth => self.auth(request).map(|()| write::ok(&mut out)),
            Local::Select => match request.arg(1).and_then(parse_i64) {
                None => Err(ClientError::NotAnInteger),
                Some(0) => {
                    write::ok(&mut out);
                    Ok(())
                }
                Some(_) => Err(ClientError::SelectNotAllowed),
            },
            Local::Quit => {
                write::ok(&mut out);
                self.reply(out.split().freeze());
                self.local = out;
                return self.close_after_last();
            }
            Local::Reset => {
                self.drop_dedicated();
                self.drop_subscriptions();
                self.switch_protocol(Protocol::Resp2);
                self.client.name = None;
                // Back to the default user, who needs its password again.
                self.set_user(self.settings.users.without_auth());
                write::simple(&mut out, "RESET");
                Ok(())
            }
            Local::ClientId => {
                write::integer(&mut out, self.client.id as i64);
                Ok(())
            }
            Local::ClientGetName => {
                match &self.client.name {
                    Some(name) => write::bulk(&mut out, name),
                    None => write::null(&mut out, self.client.protocol),
                }
                Ok(())
            }
            Local::ClientSetName => valid_name(request.arg_bytes(2)).map(|name| {
                self.client.name = name;
                write::ok(&mut out);
            }),
            Local::ClientSetInfo => self.set_info(request).map(|()| write::ok(&mut out)),
            Local::ClientList => {
                self.client_list(request).map(|text| write::verbatim(&mut out, self.client.protocol, &text))
            }
            Local::ClientInfo => {
                self.publish_view();
                let line = self.registered.handle.line(std::time::Instant::now()) + "\n";
                write::verbatim(&mut out, self.client.protocol, &line);
                Ok(())
            }
            Local::ClientKill => match self.client_kill(request, &mut out) {
                Ok(killed_me) => {
                    self.reply(out.split().freeze());
                    self.local = out;
                    if killed_me {
                        // Like Redis: the client gets the reply, then is closed.
                        self.close_after_last();
                    }
                    return;
                }
                Err(error) => Err(error),
            },
            Local::ClientReply => {
                let mode = request.arg(2).unwrap_or_default();
                if mode.eq_ignore_ascii_case(b"on") {
                    self.silence = super::Silence::None;
                    write::ok(&mut out);
                    Ok(())
                } else if mode.eq_ignore_ascii_case(b"off") {
                    self.silence = super::Silence::Off;
                    self.local = out;
                    return;
                } else if mode.eq_ignore_ascii_case(b"skip") {
                    self.silence = super::Silence::Skip(2);
                    self.local = out;
                    return;
                } else {
                    Err(ClientError::Syntax)
                }
            }
            Local::ClientNoEvict => {
                let mode = request.arg(2).unwrap_or_default();
                let on = mode.eq_ignore_ascii_case(b"on");
                if on || mode.eq_ignore_ascii_case(b"off") {
                    // slotgate never evicts clients: the flag is kept for CLIENT LIST.
                    clients::lock(&self.registered.handle.view).no_evict = on;
                    write::ok(&mut out);
                    Ok(())
                } else {
                    Err(ClientError::Syntax)
                }
            }
            Local::AclWhoAmI => {
                let name = self.user.as_ref().map_or("default", |user| &user.name);
                write::bulk(&mut out, name.as_bytes());
                Ok(())
            }
            Local::ClusterOnly => Err(ClientError::ClusterSupportDisabled),
            Local::ClusterKeySlot => {
                let slot = crate::cluster::key_slot(request.arg(2).unwrap_or_default());
                write::integer(&mut out, slot.index() as i64);
                Ok(())
            }
            Local::Multi => return self.multi(request.clone()),
            Local::Exec => return self.exec(request.clone()),
            Local::Discard => return self.discard(request.clone()),
            Local::Watch => return self.watch(command, request.clone()),
            Local::Unwatch => return self.unwatch(request.clone()),
        };
        match result {
            Ok(()) => self.reply(out.split().freeze()),
            Err(error) => {
                out.clear();
                self.reply_error(error);
            }
        }
        self.local = out;
    }

    /// HELLO [protover [AUTH username password] [SETNAME clientname]]
    fn hello(&mut self, request: &Request, out: &mut BytesMut) -> Result<(), ClientError> {
        let mut protocol = self.client.protocol;
        let mut at = 1;
        if let Some(version) = request.arg(1) {
            protocol = match parse_i64(version).ok_or(ClientError::ProtocolVersion)? {
                2 => Protocol::Resp2,
                3 => Protocol::Resp3,
                _ => return Err(ClientError::NoProto),
            };
            at = 2;
        }
        let mut credentials = None;
        let mut name = None;
        while let Some(option) = request.arg(at) {
            let left = request.argc() - at - 1;
            if option.eq_ignore_ascii_case(b"auth") && left >= 2 {
                credentials = Some(at + 1);
                at += 3;
            } else if option.eq_ignore_ascii_case(b"setname") && left >= 1 {
                name = Some(request.arg_bytes(at + 1));
                at += 2;
            } else {
                return Err(ClientError::HelloOption(request.arg_bytes(at).unwrap_or_default()));
            }
        }
        match credentials {
            Some(at) => self.log_in(request.arg(at).unwrap_or_default(), request.arg(at + 1).unwrap_or_default())?,
            None if self.user.is_none() => return Err(ClientError::NoAuthHello),
            None => {}
        }
        if let Some(name) = name {
            self.client.name = valid_name(name)?;
        }
        self.switch_protocol(protocol);
        let version = self.ctx.pool.topology().redis_version();
        let version = version.as_deref().unwrap_or(REDIS_VERSION);
        write::map(out, protocol, 7);
        write::bulk(out, b"server");
        write::bulk(out, b"redis");
        write::bulk(out, b"version");
        write::bulk(out, version.as_bytes());
        write::bulk(out, b"proto");
        write::integer(out, protocol.version());
        write::bulk(out, b"id");
        write::integer(out, self.client.id as i64);
        write::bulk(out, b"mode");
        write::bulk(out, b"standalone");
        write::bulk(out, b"role");
        write::bulk(out, b"master");
        write::bulk(out, b"modules");
        write::array(out, 0);
        Ok(())
    }

    /// Later requests travel on the node connections of `protocol`: they wait
    /// for those in flight on the old ones (see "Ordering" in the session).
    fn switch_protocol(&mut self, protocol: Protocol) {
        if protocol != self.client.protocol {
            self.client.protocol = protocol;
            self.protocol_switch = true;
            // Idle subscribed connections speak the old protocol: new ones
            // are opened for the next subscription.
            if !self.subs.active() {
                self.drop_subscriptions();
            }
        }
    }

    /// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]: slotgate's clients.
    fn client_list(&mut self, request: &Request) -> Result<String, ClientError> {
        self.publish_view();
        let mut ids: Option<Vec<u64>> = None;
        let mut kind: Option<Vec<u8>> = None;
        let mut at = 2;
        while let Some(option) = request.arg(at) {
            if option.eq_ignore_ascii_case(b"type") && request.arg(at + 1).is_some() {
                let wanted = request.arg(at + 1).unwrap_or_default().to_ascii_lowercase();
                if !matches!(&wanted[..], b"normal" | b"master" | b"replica" | b"slave" | b"pubsub") {
                    return Err(ClientError::UnknownClientType(request.arg_bytes(at + 1).unwrap_or_default()));
                }
                kind = Some(wanted);
                at += 2;
            } else if option.eq_ignore_ascii_case(b"id") && request.arg(at + 1).is_some() {
                let mut list = Vec::new();
                at += 1;
                while let Some(id) = request.arg(at) {
                    match parse_i64(id).and_then(|id| u64::try_from(id).ok()).filter(|&id| id > 0) {
                        Some(id) => list.push(id),
                        None => return Err(ClientError::InvalidClientId),
                    }
                    at += 1;
                }
                ids = Some(list);
            } else {
                return Err(ClientError::Syntax);
            }
        }
        let now = std::time::Instant::now();
        let mut text = String::new();
        for client in self.ctx.clients.snapshot() {
            if ids.as_ref().is_some_and(|ids| !ids.contains(&client.id)) {
                continue;
            }
            if kind.as_deref().is_none_or(|kind| client.is_type(kind)) {
                text.push_str(&client.line(now));
                text.push('\n');
            }
        }
        Ok(text)
    }

    /// CLIENT KILL addr:port, or CLIENT KILL [ID id] [ADDR a] [LADDR a]
    /// [USER u] [SKIPME yes|no] [MAXAGE s] [TYPE t]: among slotgate's clients.
    /// Whether this very client was among those killed.
    fn client_kill(&mut self, request: &Request, out: &mut BytesMut) -> Result<bool, ClientError> {
        let now = std::time::Instant::now();
        let me = self.client.id;
        if request.argc() == 3 {
            let addr = String::from_utf8_lossy(request.arg(2).unwrap_or_default()).into_owned();
            let Some(client) = self.ctx.clients.snapshot().into_iter().find(|c| c.addr() == addr) else {
                return Err(ClientError::NoSuchClient);
            };
            client.kill_unless(me);
            write::ok(out);
            return Ok(client.id == me);
        }
        let (mut id, mut addr, mut laddr, mut skipme, mut maxage, mut user) = (None, None, None, true, None, None);
        let mut kind: Option<Vec<u8>> = None;
        let mut at = 2;
        while let (Some(option), Some(value)) = (request.arg(at), request.arg(at + 1)) {
            let text = String::from_utf8_lossy(value).into_owned();
            match option.to_ascii_lowercase().as_slice() {
                b"id" => {
                    id = Some(parse_i64(value).and_then(|n| u64::try_from(n).ok()).ok_or(ClientError::InvalidClientId)?)
                }
                b"addr" => addr = Some(text),
                b"laddr" => laddr = Some(text),
                b"user" if self.settings.users.get(value).is_none() => {
                    return Err(ClientError::NoSuchUser(Bytes::copy_from_slice(value)));
                }
                b"user" => user = Some(text),
                b"skipme" if value.eq_ignore_ascii_case(b"yes") => skipme = true,
                b"skipme" if value.eq_ignore_ascii_case(b"no") => skipme = false,
                b"maxage" => maxage = Some(parse_i64(value).ok_or(ClientError::NotAnInteger)?),
                b"type" => {
                    let wanted = value.to_ascii_lowercase();
                    if !matches!(&wanted[..], b"normal" | b"master" | b"replica" | b"slave" | b"pubsub") {
                        return Err(ClientError::UnknownClientType(Bytes::copy_from_slice(value)));
                    }
                    kind = Some(wanted);
                }
                _ => return Err(ClientError::Syntax),
            }
            at += 2;
        }
        if at != request.argc() {
            return Err(ClientError::Syntax);
        }
        let (mut killed, mut killed_me) = (0, false);
        for client in self.ctx.clients.snapshot() {
            let matches = id.is_none_or(|id| client.id == id)
                && addr.as_ref().is_none_or(|a| &client.addr() == a)
                && laddr.as_ref().is_none_or(|a| &client.laddr() == a)
                && user.as_ref().is_none_or(|u| *client.user() == **u)
                && maxage.is_none_or(|age| client.age(now) >= age)
                && kind.as_deref().is_none_or(|kind| client.is_type(kind))
                && !(skipme && client.id == me);
            if matches {
                client.kill_unless(me);
                killed_me |= client.id == me;
                killed += 1;
            }
        }
        write::integer(out, killed);
        Ok(killed_me)
    }

    /// CLIENT SETINFO LIB-NAME|LIB-VER value (Redis 7.2; clients send it on connect).
    fn set_info(&mut self, request: &Request) -> Result<(), ClientError> {
        let attr = request.arg_bytes(2).unwrap_or_default();
        let value = request.arg_bytes(3).unwrap_or_default();
        let slot = if attr.eq_ignore_ascii_case(b"lib-name") {
            &mut self.client.lib_name
        } else if attr.eq_ignore_ascii_case(b"lib-ver") {
            &mut self.client.lib_ver
        } else {
            return Err(ClientError::UnknownClientInfo(attr));
        };
        if !value.iter().all(|c| (b'!'..=b'~').contains(c)) {
            return Err(ClientError::InvalidClientInfo(attr));
        }
        *slot = (!value.is_empty()).then_some(value);
        Ok(())
    }
}

impl Session {
    /// AUTH [username] password; the one-argument form is the default user's.
    fn auth(&mut self, request: &Request) -> Result<(), ClientError> {
        match request.argc() {
            // As Redis, which takes it for a configuration mistake.
            2 if self.settings.users.without_auth().is_some() => Err(ClientError::AuthWithoutPassword),
            2 => self.log_in(b"default", request.arg(1).unwrap_or_default()),
            3 => self.log_in(request.arg(1).unwrap_or_default(), request.arg(2).unwrap_or_default()),
            _ => Err(ClientError::Syntax),
        }
    }

    /// Checks a user and password; a failure leaves the client as it was.
    /// An address with too many recent failures is not even checked.
    fn log_in(&mut self, name: &[u8], password: &[u8]) -> Result<(), ClientError> {
        let (ip, now) = (self.registered.handle.ip(), std::time::Instant::now());
        if let Some(wait) = ip.and_then(|ip| self.ctx.failed_logins.wait(ip, now, self.settings.max_auth_failures)) {
            crate::metrics::get().auth_failures.inc();
            return Err(ClientError::TooManyFailedLogins(wait.as_secs() + 1));
        }
        let Some(user) = self.settings.users.log_in(name, password) else {
            crate::metrics::get().auth_failures.inc();
            if let Some(ip) = ip {
                self.ctx.failed_logins.failed(ip, now, self.settings.max_auth_failures);
            }
            return Err(ClientError::WrongPass);
        };
        self.set_user(Some(user));
        Ok(())
    }

    /// Logs the client in as `user`, or out (`None`): a client that is not
    /// logged in may only send small requests, as in Redis.
    pub(super) fn set_user(&mut self, user: Option<Arc<User>>) {
        self.parser.set_unauthenticated(user.is_none());
        clients::lock(&self.registered.handle.view).user = user.as_ref().map(|user| user.name.clone());
        self.user = user;
    }
}

/// A client name: printable ASCII without spaces; empty clears the name.
fn valid_name(name: Option<Bytes>) -> Result<Option<Bytes>, ClientError> {
    let name = name.unwrap_or_default();
    if !name.iter().all(|c| (b'!'..=b'~').contains(c)) {
        return Err(ClientError::InvalidClientName);
    }
    Ok((!name.is_empty()).then_some(name))
}
