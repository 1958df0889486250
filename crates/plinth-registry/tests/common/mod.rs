//! Test harness: the MLflow router on 127.0.0.1 (port 0) over a real store, with a stand-in for
//! the server's bearer-token authentication that maps fixed test tokens to identities. The
//! real `plinth serve` authenticates tokens against the store instead.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use plinth_registry::{RegistryState, mlflow_router};
use plinth_store::Store;
use plinth_types::{Identity, Role};

pub const MEMBER_TOKEN: &str = "test-member-token";
pub const VIEWER_TOKEN: &str = "test-viewer-token";

pub struct Server {
    pub addr: SocketAddr,
    pub store: Store,
    pub artifact_root: std::path::PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn identity_for(token: &str) -> Option<Identity> {
    let role = match token {
        MEMBER_TOKEN => Role::Member,
        VIEWER_TOKEN => Role::Viewer,
        _ => return None,
    };
    Some(Identity {
        token_id: format!("t-{}", role.as_str()),
        name: format!("{}-bot", role.as_str()),
        team: Some("ml".into()),
        role,
    })
}

/// The test stand-in for the server's authentication layer.
async fn test_identity_layer(mut req: Request, next: Next) -> Response {
    let who = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(identity_for);
    if let Some(who) = who {
        req.extensions_mut().insert(who);
    }
    next.run(req).await
}

/// Starts the router over a SQLite store in a temp dir (or `store_url` when given).
pub async fn start(store_url: Option<String>, max_upload_bytes: Option<u64>) -> Server {
    let dir = tempfile::TempDir::new().unwrap();
    let url =
        store_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("plinth.db").display()));
    let store = Store::connect(&url).await.unwrap();
    let artifact_root = dir.path().join("artifacts");
    let mut state = RegistryState::new(store.clone(), &artifact_root);
    if let Some(m) = max_upload_bytes {
        state.max_upload_bytes = m;
    }
    let app = mlflow_router(state).layer(axum::middleware::from_fn(test_identity_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        addr,
        store,
        artifact_root,
        _dir: dir,
    }
}
