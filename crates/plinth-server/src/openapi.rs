//! The OpenAPI document, generated from the handlers' annotations.

use axum::http::StatusCode;
use utoipa::openapi::RefOr;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::jobs::api as jobs;
use crate::{api, cost, gateway, lineage, model_gc, models, upload};

#[derive(OpenApi)]
#[openapi(
    info(title = "Plinth API", description = "Plinth: the platform under production AI. Every /api route needs `Authorization: Bearer <token>`."),
    paths(
        api::healthz, api::readyz, api::metrics, api::openapi,
        api::whoami, api::overview, api::kinds, api::apply,
        api::list_resources, api::get_resource, api::delete_resource,
        api::list_tokens, api::create_token, api::revoke_token,
        api::audit_log, api::audit_verify,
        api::register_dataset, api::list_dataset_versions, api::get_dataset_version,
        api::get_dataset_profile, api::get_dataset_lineage, api::get_dataset_reference,
        api::set_dataset_reference, api::dataset_drift, upload::upload_dataset,
        jobs::submit_job, jobs::submit_jobs, jobs::list_jobs, jobs::get_job, jobs::cancel_job, jobs::job_logs, jobs::job_events, jobs::interrupt_node,
        lineage::ingest, lineage::graph, lineage::run_events,
        models::list_models, models::get_model, models::register_version, models::get_version,
        models::set_manifest, models::diff_versions, models::gates, models::promote,
        models::approve, models::deprecate, models::rollback, models::retrain_status,
        model_gc::collect,
        cost::report, cost::units, cost::export, cost::ingest_usage, cost::budgets, cost::approve_job,
        gateway::get_gateway, gateway::get_deployment_status, gateway::get_deployment_usage,
    ),
    modifiers(&BearerAuth, &ResponseDescriptions),
    tags(
        (name = "ops", description = "health, readiness, metrics"),
        (name = "resources", description = "declarative resources: Pool, Team, Queue, DataContract, Deployment"),
        (name = "access", description = "tokens and identities"),
        (name = "audit", description = "the hash-chained audit log"),
        (name = "jobs", description = "jobs: submit, wait reasons, attempts, logs, cancel"),
        (name = "cost", description = "cost reports, unit economics, FOCUS export, usage ingestion and budgets"),
        (name = "models", description = "model versions with their typed fields, diffs, release gates, promotion, approvals, rollback, deprecation"),
        (name = "lineage", description = "OpenLineage intake and the lineage graph of datasets, jobs, runs and models"),
        (name = "gateway", description = "the inference gateway: live deployment splits, canary rollbacks, per-request usage"),
        (name = "datasets", description = "dataset versions checked against DataContracts: uploads, profiles, drift, OpenLineage facets"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// OpenAPI requires a `description` on every response object; annotations that leave it out
/// get the status code's reason phrase ("OK", "Unauthorized", ...).
struct ResponseDescriptions;

impl Modify for ResponseDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    if let RefOr::T(response) = response
                        && response.description.is_empty()
                    {
                        response.description = StatusCode::from_bytes(status.as_bytes())
                            .ok()
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("response")
                            .to_string();
                    }
                }
            }
        }
    }
}

/// The document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_string())
}
