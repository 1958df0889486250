use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use plinth_core::Platform;
use plinth_store::Store;
use plinth_types::audit::{AuditEvent, BadEvent};
use plinth_types::{Identity, ResourceView};
use serde_json::json;
use tower::ServiceExt;

use super::render::{TEMPLATES, render};
use super::views::tests::view;
use super::*;

fn admin() -> Identity {
    Identity {
        token_id: "abc123abc123".into(),
        name: "ops <admin>".into(),
        team: None,
        role: Role::Admin,
    }
}

fn viewer() -> Identity {
    Identity {
        token_id: "def456def456".into(),
        name: "ada".into(),
        team: Some("research".into()),
        role: Role::Viewer,
    }
}

fn sample_pools() -> Vec<ResourceView> {
    vec![
        view(
            "Pool",
            "gpu-a",
            None,
            json!({"backend": "local", "nodes": 2, "cpusPerNode": 32, "memoryGibPerNode": 256,
                   "accelerator": {"type": "nvidia-h100", "count": 8}, "procurement": "spot",
                   "pricePerGpuHour": 2.1, "currency": "USD", "region": "eu-west"}),
        ),
        view(
            "Pool",
            "cpu-b",
            None,
            json!({"backend": "slurm", "nodes": 4, "cpusPerNode": 64, "memoryGibPerNode": 512,
                   "procurement": "on_demand", "pricePerNodeHour": 1.5, "currency": "USD"}),
        ),
    ]
}

fn sample_event(seq: i64) -> AuditEvent {
    AuditEvent {
        seq,
        ts: "2026-01-02T03:04:05.000001Z".into(),
        actor: "token:abc123abc123(ops)".into(),
        action: "resource.create".into(),
        kind: "Pool".into(),
        name: "gpu-a".into(),
        team: None,
        before_digest: None,
        after_digest: Some("x".into()),
        detail: json!({"generation": 1, "file": "<script>alert(1)</script>"}),
        prev_hash: "0".repeat(64),
        hash: "1".repeat(64),
    }
}

fn me(who: &Identity) -> Me {
    Me::from(who)
}

#[test]
fn every_template_compiles() {
    // One bad template would take every page down: they are all checked together.
    if let Err(e) = super::render::environment() {
        panic!("{e}");
    }
    let env = super::render::environment().unwrap();
    for (name, _) in TEMPLATES {
        assert!(env.get_template(name).is_ok(), "{name}");
    }
}

#[test]
fn login_renders_with_and_without_error() {
    let html = render("login.html", None, "login", &LoginPage { error: None }).unwrap();
    assert!(html.contains("<h1>Sign in</h1>"));
    assert!(html.contains(r#"name="token""#));
    assert!(!html.contains("login-error"));
    assert!(!html.contains(r#"id="nav""#));
    let html = render(
        "login.html",
        None,
        "login",
        &LoginPage {
            error: Some("bad <token>".into()),
        },
    )
    .unwrap();
    assert!(html.contains(r#"id="login-error""#));
    assert!(html.contains("bad &lt;token&gt;"));
}

#[test]
fn overview_renders_empty_and_full() {
    let who = viewer();
    let empty = OverviewPage {
        cards: vec![Card {
            id: "stat-pools",
            label: "Pools",
            value: "0".into(),
            href: Some("/console/pools"),
        }],
        pools: Vec::new(),
        chart: None,
        recent_visible: false,
        recent: Vec::new(),
    };
    let html = render("overview.html", Some(&me(&who)), "overview", &empty).unwrap();
    assert!(html.contains("<h1>Overview</h1>"));
    assert!(html.contains(r#"id="overview-cards""#));
    assert!(html.contains("No pools yet — apply one with <code>plinth apply -f pools.yaml</code>"));
    assert!(html.contains(r#"id="recent-hidden""#));
    assert!(html.contains(r#"class="active" aria-current="page">Overview"#));

    let who = admin();
    let pools: Vec<PoolRow> = sample_pools().iter().map(views::pool_row).collect();
    let full = OverviewPage {
        cards: Vec::new(),
        chart: views::capacity_chart(&pools),
        pools,
        recent_visible: true,
        recent: vec![views::audit_row(&sample_event(1))],
    };
    let html = render("overview.html", Some(&me(&who)), "overview", &full).unwrap();
    assert!(html.contains(r#"<svg id="overview-chart""#));
    assert!(html.contains(">gpu-a</text>"));
    assert!(html.contains("16 GPUs"));
    assert!(html.contains("256 cores"));
    assert!(html.contains(r#"id="recent-table""#));
    // The identity is escaped in the navigation bar.
    assert!(html.contains("ops &lt;admin&gt;"));
    assert!(!html.contains("ops <admin>"));
}

#[test]
fn pools_teams_queues_render_empty_and_full() {
    let who = me(&admin());
    let empty = PoolsPage {
        pools: Vec::new(),
        chart: None,
        nodes: 0,
        gpus: 0,
        cpus: 0,
    };
    let html = render("pools.html", Some(&who), "pools", &empty).unwrap();
    assert!(html.contains("<h1>Pools</h1>"));
    assert!(html.contains(r#"id="pools-empty""#));
    assert!(!html.contains(r#"id="pools-table""#));

    let pools: Vec<PoolRow> = sample_pools().iter().map(views::pool_row).collect();
    let full = PoolsPage {
        chart: views::gpu_chart(&pools),
        nodes: 6,
        gpus: 16,
        cpus: 320,
        pools,
    };
    let html = render("pools.html", Some(&who), "pools", &full).unwrap();
    assert!(html.contains(r#"id="pools-table""#));
    assert!(html.contains(r#"<svg id="pool-gpu-chart""#));
    assert!(html.contains("nvidia-h100 × 8"));
    assert!(html.contains("2.10 USD&#x2f;GPU-h"));
    assert!(html.contains("CPU only"));

    let html = render(
        "teams.html",
        Some(&who),
        "teams",
        &TeamsPage { teams: Vec::new() },
    )
    .unwrap();
    assert!(html.contains("<h1>Teams</h1>"));
    assert!(html.contains("No teams yet"));
    let mut team = view(
        "Team",
        "research",
        Some("research"),
        json!({"displayName": "R&D <lab>", "owners": ["ada@example.com"]}),
    );
    team.metadata.labels.insert("tier".into(), "gold".into());
    let html = render(
        "teams.html",
        Some(&who),
        "teams",
        &TeamsPage {
            teams: vec![views::team_row(&team)],
        },
    )
    .unwrap();
    assert!(html.contains(r#"id="teams-table""#));
    assert!(html.contains("R&amp;D &lt;lab&gt;"));
    assert!(html.contains("ada@example.com"));
    assert!(html.contains("tier=gold"));

    let html = render(
        "queues.html",
        Some(&who),
        "queues",
        &QueuesPage {
            queues: Vec::new(),
            chart: None,
            usage: Default::default(),
        },
    )
    .unwrap();
    assert!(html.contains("<h1>Queues</h1>"));
    assert!(html.contains("No queues yet"));
    let q = view(
        "Queue",
        "product-serve",
        Some("product"),
        json!({"team": "product", "cohort": "shared", "priority": 100,
               "quotas": [{"pool": "gpu-a", "gpus": 4, "borrowingLimit": 2}, {"pool": "cpu-b", "gpus": 0, "cpus": 64}]}),
    );
    let queues = vec![views::queue_row(&q)];
    let data = QueuesPage {
        chart: views::quota_chart(&queues),
        queues,
        usage: [(
            "product-serve".to_string(),
            vec!["gpu-a: 6 GPUs, 2 CPUs in use (2 GPUs borrowed)".to_string()],
        )]
        .into_iter()
        .collect(),
    };
    let html = render("queues.html", Some(&who), "queues", &data).unwrap();
    assert!(html.contains(r#"id="queues-table""#));
    assert!(html.contains("6 GPUs, 2 CPUs in use (2 GPUs borrowed)"));
    assert!(html.contains(r#"<svg id="queue-quota-chart""#));
    assert!(html.contains("4 GPUs"));
    assert!(html.contains("64 CPUs"));
    assert!(html.contains("borrow ≤ 2"));
    assert!(html.contains(">shared<"));
}

#[test]
fn audit_renders_table_denial_and_paging() {
    let who = me(&admin());
    let base = || AuditPage {
        filters: AuditQuery::default(),
        denied: None,
        invalid: None,
        events: Vec::new(),
        next: None,
        filtered: false,
        can_verify: true,
    };
    let html = render("audit.html", Some(&who), "audit", &base()).unwrap();
    assert!(html.contains("<h1>Audit log</h1>"));
    assert!(html.contains(r#"id="audit-empty""#));
    assert!(html.contains(r#"id="verify-chain""#));

    let mut full = base();
    full.events = vec![views::audit_row(&sample_event(1))];
    full.filters.kind = Some("Pool\"><b>".into());
    full.filtered = true;
    full.next = Some(AuditQuery {
        kind: Some("Pool".into()),
        after_seq: Some("1".into()),
        ..Default::default()
    });
    let html = render("audit.html", Some(&who), "audit", &full).unwrap();
    assert!(html.contains(r#"id="audit-table""#));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(!html.contains("<script>"));
    assert!(!html.contains("<b>"));
    assert!(html.contains("/console/audit?kind=Pool&amp;after_seq=1"));

    let mut denied = base();
    denied.denied = Some("role viewer may not read the audit log".into());
    denied.can_verify = false;
    let html = render("audit.html", Some(&me(&viewer())), "audit", &denied).unwrap();
    assert!(html.contains(r#"id="audit-permission""#));
    assert!(!html.contains(r#"id="audit-table""#));
    assert!(!html.contains(r#"id="verify-chain""#));
}

#[test]
fn verify_and_error_pages_render() {
    let who = me(&admin());
    let ok = VerifyPage {
        result: AuditVerification {
            ok: true,
            checked: 12,
            first_bad: None,
        },
    };
    let html = render("verify.html", Some(&who), "audit", &ok).unwrap();
    assert!(html.contains("Chain intact."));
    assert!(html.contains("12 events"));
    let bad = VerifyPage {
        result: AuditVerification {
            ok: false,
            checked: 4,
            first_bad: Some(BadEvent {
                seq: 5,
                reason: "hash mismatch: the event was altered".into(),
            }),
        },
    };
    let html = render("verify.html", Some(&who), "audit", &bad).unwrap();
    assert!(html.contains("Chain broken at event #5."));
    assert!(html.contains("hash mismatch"));

    let resp =
        ConsoleError::new(StatusCode::FORBIDDEN, "Permission denied", "no <way>").into_response();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

// ----- the routes, against a real store -----

static DIRS: AtomicUsize = AtomicUsize::new(0);

struct TestServer {
    app: Router,
    platform: Platform,
    dir: std::path::PathBuf,
    admin: String,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ADMIN_TOKEN: &str = "console-unit-test-admin-token-0123";

async fn server() -> TestServer {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("plinth-console-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.join("p.db").display()))
        .await
        .unwrap();
    let platform = Platform::new(store);
    platform.bootstrap(Some(ADMIN_TOKEN)).await.unwrap();
    let state = AppState {
        platform: platform.clone(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        max_body_bytes: 1 << 20,
        max_upload_bytes: 1 << 20,
        data_dir: dir.clone(),
        jobs: None,
        registry: None,
        gateway: None,
    };
    TestServer {
        app: crate::router(state),
        platform,
        dir,
        admin: ADMIN_TOKEN.into(),
    }
}

impl TestServer {
    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 22).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header(
                header::COOKIE,
                format!("plinth_session={}", session::encode_value(t)),
            );
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post_form(
        &self,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(t) = token {
            req = req.header(
                header::COOKIE,
                format!("plinth_session={}", session::encode_value(t)),
            );
        }
        self.send(req.body(Body::from(body.to_string())).unwrap())
            .await
    }
}

fn location(h: &axum::http::HeaderMap) -> &str {
    h.get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn pages_need_a_session_and_sign_in_sets_it() {
    let s = server().await;
    let (status, h, _) = s.get("/", None).await;
    assert_eq!((status, location(&h)), (StatusCode::SEE_OTHER, "/console"));
    for path in [
        "/console",
        "/console/pools",
        "/console/teams",
        "/console/queues",
        "/console/audit",
        "/console/contracts",
    ] {
        let (status, h, _) = s.get(path, None).await;
        assert_eq!(
            (status, location(&h)),
            (StatusCode::SEE_OTHER, "/console/login"),
            "{path}"
        );
        let (status, h, _) = s.get(path, Some("not-a-real-token-at-all")).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            h.get(header::SET_COOKIE)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }
    let (status, _, body) = s
        .post_form("/console/login", "token=wrong-token-value", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains(r#"id="login-error""#), "{body}");
    let (status, _, body) = s.post_form("/console/login", "token=", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Enter an API token"));

    let (status, h, _) = s
        .post_form("/console/login", &format!("token={}", s.admin), None)
        .await;
    assert_eq!((status, location(&h)), (StatusCode::SEE_OTHER, "/console"));
    let cookie = h.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert_eq!(
        cookie,
        format!(
            "plinth_session={}; HttpOnly; SameSite=Strict; Path=/",
            s.admin
        )
    );

    let (status, h, body) = s.get("/console", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<h1>Overview</h1>"));
    assert!(body.contains("No pools yet"));
    assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert!(
        h.get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let (status, h, _) = s.get("/console/login", Some(&s.admin)).await;
    assert_eq!((status, location(&h)), (StatusCode::SEE_OTHER, "/console"));

    let (status, h, _) = s.post_form("/console/logout", "", Some(&s.admin)).await;
    assert_eq!(
        (status, location(&h)),
        (StatusCode::SEE_OTHER, "/console/login")
    );
    assert!(
        h.get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn pages_show_data_and_respect_roles() {
    let s = server().await;
    let admin = s.platform.authenticate(&s.admin).await.unwrap();
    let docs = [
        json!({"apiVersion": "plinth/v1", "kind": "Pool", "metadata": {"name": "gpu-a"},
               "spec": {"nodes": 2, "cpusPerNode": 32, "memoryGibPerNode": 256,
                        "accelerator": {"type": "nvidia-h100", "count": 8}}}),
        json!({"apiVersion": "plinth/v1", "kind": "Team", "metadata": {"name": "research"}, "spec": {}}),
        json!({"apiVersion": "plinth/v1", "kind": "Team", "metadata": {"name": "product"}, "spec": {}}),
        json!({"apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": "research-train"},
               "spec": {"team": "research", "quotas": [{"pool": "gpu-a", "gpus": 8}]}}),
        json!({"apiVersion": "plinth/v1", "kind": "Queue", "metadata": {"name": "product-serve"},
               "spec": {"team": "product", "quotas": [{"pool": "gpu-a", "gpus": 4}]}}),
    ];
    let docs = docs
        .into_iter()
        .map(|d| plinth_types::api::SourcedDocument {
            file: None,
            index: None,
            document: d,
        })
        .collect();
    s.platform.apply(&admin, docs, false).await.unwrap();

    let (status, _, body) = s.get("/console/pools", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"id="pool-gpu-a""#));
    assert!(body.contains("16 GPUs"));
    let (_, _, body) = s.get("/console/queues", Some(&s.admin)).await;
    assert!(body.contains("research-train") && body.contains("product-serve"));
    let (status, _, body) = s
        .get("/console/audit?kind=Queue&actor=", Some(&s.admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"id="audit-table""#));
    assert!(!body.contains("Pool/<span"));
    let (status, _, body) = s
        .post_form("/console/audit/verify", "", Some(&s.admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Chain intact."));
    let (status, _, body) = s.get("/console/audit?after_seq=abc", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains(r#"id="audit-invalid""#));

    let req = plinth_types::api::CreateTokenRequest {
        name: "ada".into(),
        team: Some("research".into()),
        role: Role::Viewer,
    };
    let created = s.platform.create_token(&admin, req).await.unwrap();
    let (_, _, body) = s.get("/console/queues", Some(&created.token)).await;
    assert!(body.contains("research-train"));
    assert!(!body.contains("product-serve"));
    let (status, _, body) = s.get("/console/audit", Some(&created.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains(r#"id="audit-permission""#));
    let (status, _, body) = s
        .post_form("/console/audit/verify", "", Some(&created.token))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains(r#"id="error-message""#));

    s.platform
        .revoke_token(&admin, &created.info.id)
        .await
        .unwrap();
    let (status, h, _) = s.get("/console/queues", Some(&created.token)).await;
    assert_eq!(
        (status, location(&h)),
        (StatusCode::SEE_OTHER, "/console/login")
    );

    let (status, h, _) = s.get("/console/nope", None).await;
    assert_eq!(
        (status, location(&h)),
        (StatusCode::SEE_OTHER, "/console/login")
    );
    let (status, _, body) = s.get("/console/nope", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("<h1>Page not found</h1>"));
    assert!(body.contains(r#"id="nav""#));
}

#[tokio::test]
async fn contract_page_states() {
    let s = server().await;
    let admin = s.platform.authenticate(&s.admin).await.unwrap();
    let (status, _, body) = s.get("/console/contracts/nope", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("nope"), "{body}");
    let contract = json!({"apiVersion": "v3.0.2", "kind": "DataContract", "id": "orders",
        "version": "1.0.0", "status": "active",
        "schema": [{"name": "orders", "properties": [{"name": "id", "logicalType": "integer"}]}]});
    let doc = plinth_types::api::SourcedDocument {
        file: None,
        index: None,
        document: contract,
    };
    s.platform.apply(&admin, vec![doc], false).await.unwrap();
    let (status, _, body) = s.get("/console/contracts/orders", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"id="versions-empty""#), "{body}");
    assert!(body.contains(r#"id="drift-empty""#), "{body}");

    // One readable version and one that cannot be read: drift names the missing profile.
    std::fs::write(s.dir.join("a.csv"), "id\n1\n2\n").unwrap();
    for p in ["a.csv", "missing.csv"] {
        let req = plinth_types::api::RegisterDatasetRequest {
            path: s.dir.join(p).display().to_string(),
            now: None,
        };
        s.platform
            .register_dataset(&admin, "orders", req)
            .await
            .unwrap();
    }
    let (status, _, body) = s.get("/console/contracts/orders", Some(&s.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"id="drift-error""#), "{body}");
    assert!(body.contains("orders-v2 has no profile"), "{body}");
    assert!(body.contains(r#"id="checks-chart""#), "{body}");
    assert!(body.contains(r#"data-version="2""#) && body.contains(r#"data-version="1""#));
    let (_, _, list) = s.get("/console/contracts", Some(&s.admin)).await;
    assert!(
        list.contains(r#"href="/console/contracts/orders""#),
        "{list}"
    );
}
