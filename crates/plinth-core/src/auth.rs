//! Identity and access: bearer tokens stored as salted hashes, the first admin token, token
//! create/revoke/list, and the role and team rules every operation checks.

use plinth_store::{Batch, Op, StoreError};
use plinth_types::api::{CreateTokenRequest, CreatedToken, TokenInfo, TokenRecord};
use plinth_types::audit::NewAuditEvent;
use plinth_types::{Identity, Role};
use sha2::{Digest, Sha256};

use crate::{CoreError, Platform};

/// Every generated token looks like `plt_<12 hex id>_<64 hex secret>`.
pub const TOKEN_PREFIX: &str = "plt_";
const BOOTSTRAP_META: &str = "bootstrap.admin_token_id";

fn random_hex(bytes: usize) -> Result<String, CoreError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| CoreError::Store(StoreError::Internal(format!("no randomness: {e}"))))?;
    Ok(hex::encode(buf))
}

/// A new random token and its public id.
pub fn generate_token() -> Result<(String, String), CoreError> {
    let id = random_hex(6)?;
    let secret = random_hex(32)?;
    Ok((format!("{TOKEN_PREFIX}{id}_{secret}"), id))
}

/// The id under which a presented token is stored: the id part of a generated token, or a hash
/// prefix for a token supplied from outside (`PLINTH_BOOTSTRAP_TOKEN`).
fn token_id(token: &str) -> String {
    if let Some(rest) = token.strip_prefix(TOKEN_PREFIX)
        && let Some((id, secret)) = rest.split_once('_')
        && id.len() == 12
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !secret.is_empty()
    {
        return id.to_string();
    }
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    format!("x{}", &digest[..11])
}

fn hash_secret(salt: &str, token: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// May `who` read an object owned by `team` (`None`: cluster-scoped, readable by everyone)?
pub fn authorize_read(who: &Identity, team: Option<&str>) -> bool {
    match team {
        None => true,
        Some(t) => who.in_team(t),
    }
}

fn check_team_name(field: &str, team: &str) -> Result<(), CoreError> {
    plinth_config::validate_name(team).map_err(|m| CoreError::invalid(format!("{field}: {m}")))
}

impl Platform {
    fn new_record(
        &self,
        token: &str,
        name: &str,
        team: Option<String>,
        role: Role,
        created_by: &str,
    ) -> Result<TokenRecord, CoreError> {
        let salt = random_hex(16)?;
        Ok(TokenRecord {
            id: token_id(token),
            name: name.to_string(),
            team,
            role,
            hash: hash_secret(&salt, token),
            salt,
            created_at: self.now(),
            created_by: created_by.to_string(),
            revoked_at: None,
        })
    }

    fn token_event(
        &self,
        actor: &str,
        action: &str,
        t: &TokenRecord,
        detail: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            ts: self.now(),
            actor: actor.to_string(),
            action: action.to_string(),
            kind: "Token".to_string(),
            name: t.id.clone(),
            team: t.team.clone(),
            before_digest: None,
            after_digest: None,
            detail,
        }
    }

    /// Creates the first admin token if the installation has none yet. Returns the token to
    /// print (`None` when one was created before, or when `supplied` was used: the operator
    /// already knows it). The token is stored only as a salted hash.
    pub async fn bootstrap(&self, supplied: Option<&str>) -> Result<Option<String>, CoreError> {
        if self.store.get_meta(BOOTSTRAP_META).await?.is_some() {
            return Ok(None);
        }
        let (token, show) = match supplied {
            Some(t) if t.len() < 16 => {
                return Err(CoreError::invalid(
                    "PLINTH_BOOTSTRAP_TOKEN: must be at least 16 characters long",
                ));
            }
            Some(t) => (t.to_string(), false),
            None => (generate_token()?.0, true),
        };
        let record = self.new_record(&token, "bootstrap-admin", None, Role::Admin, "system")?;
        let event = self.token_event(
            "system",
            "bootstrap",
            &record,
            serde_json::json!({"role": "admin"}),
        );
        let batch = Batch {
            ops: vec![
                Op::PutMeta {
                    key: BOOTSTRAP_META.into(),
                    value: record.id.clone(),
                    only_if_absent: true,
                },
                Op::PutToken { token: record },
            ],
            events: vec![event],
        };
        match self.store.commit(batch).await {
            Ok(_) => Ok(show.then_some(token)),
            // Another replica bootstrapped at the same moment.
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Maps a bearer token to its identity; unknown and revoked tokens are rejected.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, CoreError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(CoreError::Unauthenticated("missing bearer token".into()));
        }
        let record = self.store.get_token(&token_id(token)).await?;
        let Some(record) = record else {
            return Err(CoreError::Unauthenticated("unknown token".into()));
        };
        if !constant_time_eq(
            hash_secret(&record.salt, token).as_bytes(),
            record.hash.as_bytes(),
        ) {
            return Err(CoreError::Unauthenticated("unknown token".into()));
        }
        if record.revoked_at.is_some() {
            return Err(CoreError::Unauthenticated(format!(
                "token {} was revoked",
                record.id
            )));
        }
        Ok(Identity {
            token_id: record.id,
            name: record.name,
            team: record.team,
            role: record.role,
        })
    }

    /// Creates a token. Admins create any; maintainers create tokens for their own team with a
    /// role up to maintainer.
    pub async fn create_token(
        &self,
        who: &Identity,
        req: CreateTokenRequest,
    ) -> Result<CreatedToken, CoreError> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(CoreError::invalid(
                "name: must be 1 to 100 printable characters",
            ));
        }
        if let Some(t) = &req.team {
            check_team_name("team", t)?;
        }
        if req.role != Role::Admin && req.team.is_none() {
            return Err(CoreError::invalid(format!(
                "team: required for role {}",
                req.role
            )));
        }
        match who.role {
            Role::Admin => {}
            Role::Maintainer => {
                if req.team.as_deref() != who.team.as_deref() {
                    return Err(CoreError::PermissionDenied(format!(
                        "a maintainer of team {} may only create tokens for that team",
                        who.team.as_deref().unwrap_or("-")
                    )));
                }
                if req.role > Role::Maintainer {
                    return Err(CoreError::PermissionDenied(
                        "a maintainer may not create admin tokens".into(),
                    ));
                }
            }
            _ => {
                return Err(CoreError::PermissionDenied(format!(
                    "role {} may not create tokens; maintainer or admin required",
                    who.role
                )));
            }
        }
        if let Some(team) = &req.team
            && self.store.get_object("Team", team).await?.is_none()
        {
            return Err(CoreError::invalid(format!(
                "team: Team {team:?} does not exist"
            )));
        }
        let (token, _) = generate_token()?;
        let record = self.new_record(&token, name, req.team.clone(), req.role, &who.actor())?;
        let event = self.token_event(
            &who.actor(),
            "token.create",
            &record,
            serde_json::json!({"role": req.role, "name": name}),
        );
        let info = TokenInfo::from(record.clone());
        self.store
            .commit(Batch {
                ops: vec![Op::PutToken { token: record }],
                events: vec![event],
            })
            .await?;
        Ok(CreatedToken { token, info })
    }

    /// Tokens the caller may manage: all for admins, the team's for maintainers.
    pub async fn list_tokens(&self, who: &Identity) -> Result<Vec<TokenInfo>, CoreError> {
        if who.role < Role::Maintainer {
            return Err(CoreError::PermissionDenied(format!(
                "role {} may not list tokens; maintainer or admin required",
                who.role
            )));
        }
        let all = self.store.list_tokens().await?;
        Ok(all
            .into_iter()
            .filter(|t| who.is_admin() || (t.team.is_some() && t.team == who.team))
            .map(TokenInfo::from)
            .collect())
    }

    /// Revokes a token by id. Anyone may revoke their own token; maintainers their team's
    /// non-admin tokens; admins any. Takes effect on the next request.
    pub async fn revoke_token(&self, who: &Identity, id: &str) -> Result<TokenInfo, CoreError> {
        let Some(record) = self.store.get_token(id).await? else {
            return Err(CoreError::NotFound(format!("token {id:?} not found")));
        };
        let own = record.id == who.token_id;
        let team_maintainer = who.role == Role::Maintainer
            && record.team.is_some()
            && record.team == who.team
            && record.role != Role::Admin;
        if !(own || who.is_admin() || team_maintainer) {
            return Err(CoreError::PermissionDenied(format!(
                "role {} of team {} may not revoke token {id}",
                who.role,
                who.team.as_deref().unwrap_or("-")
            )));
        }
        if record.revoked_at.is_some() {
            return Ok(TokenInfo::from(record));
        }
        let at = self.now();
        let event = self.token_event(&who.actor(), "token.revoke", &record, serde_json::json!({}));
        self.store
            .commit(Batch {
                ops: vec![Op::RevokeToken {
                    id: record.id.clone(),
                    at: at.clone(),
                }],
                events: vec![event],
            })
            .await?;
        let mut info = TokenInfo::from(record);
        info.revoked_at = Some(at);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_carry_their_id() {
        let (t, id) = generate_token().unwrap();
        assert!(t.starts_with("plt_"));
        assert_eq!(token_id(&t), id);
        let (t2, _) = generate_token().unwrap();
        assert_ne!(t, t2);
    }

    #[test]
    fn foreign_tokens_get_a_stable_hashed_id() {
        assert_eq!(
            token_id("my-very-long-bootstrap-secret"),
            token_id("my-very-long-bootstrap-secret")
        );
        assert_ne!(
            token_id("my-very-long-bootstrap-secret"),
            token_id("my-very-long-bootstrap-secreT")
        );
        assert!(token_id("plt_nothex______x_y").starts_with('x'));
    }

    #[test]
    fn hash_depends_on_salt_and_token() {
        assert_ne!(hash_secret("a", "t"), hash_secret("b", "t"));
        assert_ne!(hash_secret("a", "t"), hash_secret("a", "u"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
