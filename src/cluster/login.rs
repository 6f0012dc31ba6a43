//! How slotgate logs in to the nodes (their `requirepass`, or an ACL user):
//! the `AUTH` every node connection sends first, topology queries included.
//! Independent of the clients' own passwords.

use std::fmt;
use std::sync::Arc;

use crate::resp::Request;

/// The user and password slotgate gives the nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeLogin {
    /// `None`: the `default` user (`AUTH <password>`).
    user: Option<Arc<str>>,
    password: Arc<str>,
}

impl NodeLogin {
    pub fn new(user: &str, password: &str) -> NodeLogin {
        NodeLogin { user: (!user.is_empty()).then(|| user.into()), password: password.into() }
    }

    /// `AUTH [user] password`.
    pub fn auth(&self) -> Request {
        match &self.user {
            Some(user) => Request::from_args(&["AUTH", user, &self.password]),
            None => Request::from_args(&["AUTH", &self.password]),
        }
    }
}

impl fmt::Debug for NodeLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeLogin {{ user: {:?}, password: (set) }}", self.user.as_deref().unwrap_or("default"))
    }
}
