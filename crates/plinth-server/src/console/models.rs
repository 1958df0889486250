//! The models pages: every registered model with its staging, canary and production versions,
//! and one model's versions with their typed fields, approvals, deprecation, the verdicts of
//! their release gates for production, and links to their lineage graphs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_registry::lifecycle::{self, GateReport, LifecycleError, ModelSummary, VersionView};
use plinth_types::Identity;
use serde::Serialize;

use super::PageResult;
use super::render::{ConsoleError, page};
use super::session::Session;
use super::views::Me;
use crate::AppState;

fn page_error(e: LifecycleError, who: &Identity) -> ConsoleError {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let title = if status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Something went wrong"
    };
    ConsoleError::new(status, title, e.message).for_user(who)
}

#[derive(Debug, Serialize)]
struct ModelRow {
    #[serde(flatten)]
    summary: ModelSummary,
    href: String,
}

#[derive(Debug, Serialize)]
struct ModelsPage {
    models: Vec<ModelRow>,
}

pub(super) async fn models(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let models = lifecycle::list_models(s.platform.store())
        .await
        .map_err(|e| page_error(e, &who))?
        .into_iter()
        .filter(|m| lifecycle::may_read(&who, m.team.as_deref()))
        .map(|m| ModelRow {
            href: format!("/console/models/{}", url_escape(&m.name)),
            summary: m,
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "models.html",
        Some(&Me::from(&who)),
        "models",
        &ModelsPage { models },
    ))
}

#[derive(Debug, Serialize)]
struct VersionRow {
    #[serde(flatten)]
    view: VersionView,
    /// The gates for production.
    gates: Option<GateReport>,
    lineage_href: String,
}

#[derive(Debug, Serialize)]
struct ModelPage {
    name: String,
    generation: i64,
    policy: Option<String>,
    stages: Vec<(String, String)>,
    production_history: Vec<String>,
    versions: Vec<VersionRow>,
}

pub(super) async fn model_detail(
    State(s): State<AppState>,
    Session(who): Session,
    Path(name): Path<String>,
) -> PageResult {
    let store = s.platform.store();
    lifecycle::check_visible(store, &who, &name)
        .await
        .map_err(|e| page_error(e, &who))?;
    let m = lifecycle::get_model(store, &name)
        .await
        .map_err(|e| page_error(e, &who))?;
    let mut versions = Vec::new();
    for v in m.versions {
        let gates = lifecycle::gates(store, &name, &v.version, "production")
            .await
            .ok();
        versions.push(VersionRow {
            lineage_href: format!("/console/lineage?node={}", url_escape(&v.lineage_node)),
            gates,
            view: v,
        });
    }
    let data = ModelPage {
        stages: ["staging", "canary", "production"]
            .iter()
            .filter_map(|t| m.stages.get(*t).map(|v| (t.to_string(), v.clone())))
            .collect(),
        name: m.name,
        generation: m.generation,
        policy: m.policy,
        production_history: m.production_history,
        versions,
    };
    Ok(page(
        StatusCode::OK,
        "model.html",
        Some(&Me::from(&who)),
        "models",
        &data,
    ))
}

/// Percent-encodes everything but unreserved characters, for a query value.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use plinth_registry::lifecycle::{Deprecation, Verdict};
    use plinth_registry::manifest::Manifest;
    use plinth_types::Role;

    use super::super::render::render;
    use super::*;

    fn who() -> Identity {
        Identity {
            token_id: "abc123abc123".into(),
            name: "ops".into(),
            team: None,
            role: Role::Admin,
        }
    }

    fn version(v: &str, stages: &[&str], gates: Vec<Verdict>) -> VersionRow {
        let view = VersionView {
            name: "churn <x>".into(),
            version: v.into(),
            source: "s3://m".into(),
            run_id: String::new(),
            author: "alice".into(),
            description: String::new(),
            created_at: 0,
            mlflow_stage: "None".into(),
            aliases: Vec::new(),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            manifest: Manifest {
                code_commit: Some("c0ffee".into()),
                datasets: vec!["flights-v3".into()],
                ..Manifest::default()
            },
            approvals: Vec::new(),
            deprecation: (v == "1").then(|| Deprecation {
                sunset: "2027-01-31".into(),
                reason: "old".into(),
                by: "bob".into(),
                at: String::new(),
                users: Vec::new(),
            }),
            lineage_node: format!("model:churn <x>@{v}"),
        };
        let passed = gates.iter().all(|g| g.passed);
        VersionRow {
            lineage_href: format!("/console/lineage?node={}", url_escape(&view.lineage_node)),
            gates: Some(GateReport {
                model: view.name.clone(),
                version: v.into(),
                target: "production".into(),
                policy: Some("p".into()),
                production: Some("2".into()),
                verdicts: gates,
                passed,
            }),
            view,
        }
    }

    #[test]
    fn the_model_page_shows_stages_verdicts_deprecation_and_the_lineage_link() {
        let pass = Verdict {
            gate: "metric auc >= 0.8".into(),
            passed: true,
            detail: "auc = 0.9".into(),
        };
        let fail = Verdict {
            gate: "metric auc >= 0.8".into(),
            passed: false,
            detail: "auc = 0.7".into(),
        };
        let data = ModelPage {
            name: "churn <x>".into(),
            generation: 3,
            policy: Some("p".into()),
            stages: vec![("production".into(), "2".into())],
            production_history: vec!["1".into()],
            versions: vec![
                version("2", &["production"], vec![pass]),
                version("1", &[], vec![fail]),
            ],
        };
        let html = render("model.html", Some(&Me::from(&who())), "models", &data).unwrap();
        assert!(
            html.contains(r#"<h1 id="model-name">churn &lt;x&gt;</h1>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<strong data-stage="production">v2</strong>"#),
            "{html}"
        );
        assert!(html.contains(r#"data-gates="passed""#) && html.contains(r#"data-gates="failed""#));
        assert!(
            html.contains("FAIL metric auc &gt;= 0.8: auc = 0.7"),
            "{html}"
        );
        assert!(html.contains("deprecated, sunset 2027-01-31"), "{html}");
        assert!(
            html.contains("lineage?node=model%3Achurn%20%3Cx%3E%402"),
            "{html}"
        );
        assert!(
            html.contains(r#"class="active" aria-current="page">Models"#),
            "{html}"
        );
    }

    #[test]
    fn the_models_page_lists_stages_or_says_there_are_none() {
        let empty = render(
            "models.html",
            Some(&Me::from(&who())),
            "models",
            &ModelsPage { models: Vec::new() },
        )
        .unwrap();
        assert!(empty.contains(r#"id="models-empty""#));
        let page = ModelsPage {
            models: vec![ModelRow {
                summary: ModelSummary {
                    name: "churn".into(),
                    team: None,
                    latest_version: Some("3".into()),
                    stages: [("production".to_string(), "2".to_string())].into(),
                    updated_at: 0,
                },
                href: "/console/models/churn".into(),
            }],
        };
        let html = render("models.html", Some(&Me::from(&who())), "models", &page).unwrap();
        assert!(html.contains(r#"<td data-production="2">2</td>"#), "{html}");
        assert!(
            html.contains(r#"href="&#x2f;console&#x2f;models&#x2f;churn""#),
            "{html}"
        );
    }
}
