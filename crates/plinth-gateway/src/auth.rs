//! Who is calling: an API key from `Authorization: Bearer <key>` maps to a team and a key id.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// The caller of a request, as limits and usage records see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Team the key belongs to (team-scoped limits count per team).
    pub team: String,
    /// Stable id of the key (never the secret itself); key-scoped limits count per key id.
    pub key_id: String,
}

/// A boxed future, so the trait stays object safe.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Option<Identity>> + Send + 'a>>;

/// Maps an API key to an identity; `None` means the key is unknown (401). The server plugs its
/// token store in here.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, api_key: &'a str) -> AuthFuture<'a>;
}

/// A fixed map of API keys, for tests and the standalone gateway.
#[derive(Debug, Clone, Default)]
pub struct StaticKeys {
    keys: HashMap<String, Identity>,
}

impl StaticKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `api_key` for `team`, recorded as key id `key_id`.
    pub fn with_key(mut self, api_key: &str, team: &str, key_id: &str) -> Self {
        self.keys.insert(
            api_key.to_owned(),
            Identity {
                team: team.to_owned(),
                key_id: key_id.to_owned(),
            },
        );
        self
    }
}

impl Authenticator for StaticKeys {
    fn authenticate<'a>(&'a self, api_key: &'a str) -> AuthFuture<'a> {
        let found = self.keys.get(api_key).cloned();
        Box::pin(std::future::ready(found))
    }
}
