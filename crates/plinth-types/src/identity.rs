//! Who is calling: roles, ordered from least to most privileged, and the identity a token maps to.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A token's role. Roles are ordered: each one can do everything the one before it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads its team's objects and the cluster-scoped ones (pools).
    Viewer,
    /// A viewer who may also run work for the team (jobs, in later capabilities).
    Member,
    /// Manages the team's own objects (queues) and its tokens up to maintainer.
    Maintainer,
    /// Manages everything, across teams.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Maintainer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller behind a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    /// The token's public id (the part before the secret).
    pub token_id: String,
    /// A human name for the token (who or what uses it).
    pub name: String,
    /// The team the token belongs to; `None` only for cluster-wide admin tokens.
    pub team: Option<String>,
    pub role: Role,
}

impl Identity {
    /// How this identity appears in the audit log: `token:<id>(<name>)`.
    pub fn actor(&self) -> String {
        format!("token:{}({})", self.token_id, self.name)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// True when the identity acts for `team` (admins act for every team).
    pub fn in_team(&self, team: &str) -> bool {
        self.is_admin() || self.team.as_deref() == Some(team)
    }
}
