//! `POST /api/v1/datacontracts/{name}/versions/upload`: the raw bytes of a data file, streamed
//! to `<data_dir>/uploads/` under their SHA-256 (written to a hidden temporary file, then
//! renamed, so a crash never leaves a half file under a registered name), then registered like
//! a path. Uploads have their own size limit (`max_upload_bytes`), far above the JSON one.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt;
use plinth_types::ErrorCode;
use plinth_types::api::DatasetVersion;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiErrorResponse;

/// File name endings of the formats the server reads, longest first.
pub const UPLOAD_EXTENSIONS: &[&str] =
    &[".csv.gz", ".parquet", ".csv", ".arrow", ".feather", ".ipc"];

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/datacontracts/{name}/versions/upload",
        post(upload_dataset),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The file's name; its ending names the format: .parquet, .csv, .csv.gz, .arrow,
    /// .feather or .ipc.
    #[param(min_length = 1, max_length = 255)]
    pub filename: String,
    /// "Now" for freshness and retention checks (RFC 3339); default: the server's clock.
    pub now: Option<String>,
}

/// The format ending of an upload's file name, or a clear error.
pub fn upload_extension(filename: &str) -> Result<&'static str, String> {
    let name = filename.trim();
    if name.is_empty() || name.len() > 255 || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "filename: {filename:?} must be a plain file name of 1 to 255 characters"
        ));
    }
    let lower = name.to_ascii_lowercase();
    UPLOAD_EXTENSIONS
        .iter()
        .find(|e| lower.ends_with(*e) && lower.len() > e.len())
        .copied()
        .ok_or_else(|| {
            format!(
                "filename: {filename:?} is not a readable format; use a name ending in {}",
                UPLOAD_EXTENSIONS.join(", ")
            )
        })
}

fn too_large(limit: u64) -> ApiErrorResponse {
    ApiErrorResponse::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "upload: the file is larger than the server's upload limit of {limit} bytes (max_upload_bytes, PLINTH_MAX_UPLOAD_BYTES or --max-upload-bytes)"
        ),
    )
}

fn io_error(what: &str, path: &FsPath, e: std::io::Error) -> ApiErrorResponse {
    tracing::error!(path = %path.display(), error = %e, "{what}");
    ApiErrorResponse::new(
        ErrorCode::Internal,
        format!("{what} {}: {e}", path.display()),
    )
}

/// Streams `body` into a temporary file in `dir`, at most `limit` bytes; returns the file, its
/// SHA-256 (hex) and its length. The temporary file is removed on any error.
async fn receive(
    dir: &FsPath,
    limit: u64,
    body: Body,
) -> Result<(PathBuf, String, u64), ApiErrorResponse> {
    let tmp = dir.join(format!(".upload-{}.part", uuid::Uuid::now_v7()));
    let result = write_body(&tmp, limit, body).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(|(hash, len)| (tmp, hash, len))
}

async fn write_body(
    tmp: &FsPath,
    limit: u64,
    mut body: Body,
) -> Result<(String, u64), ApiErrorResponse> {
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| io_error("cannot create upload file", tmp, e))?;
    let mut hash = Sha256::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiErrorResponse::new(
                ErrorCode::InvalidArgument,
                format!("upload: the request body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limit {
            return Err(too_large(limit));
        }
        hash.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| io_error("cannot write upload file", tmp, e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| io_error("cannot write upload file", tmp, e))?;
    Ok((hex::encode(hash.finalize()), total))
}

/// Uploads a data file and registers it as the DataContract's next version, like
/// `POST .../versions` with a path. The body is the file's raw bytes. Admins and maintainers.
#[utoipa::path(post, path = "/api/v1/datacontracts/{name}/versions/upload", tag = "datasets", security(("bearer" = [])),
    params(("name" = String, Path, description = "the DataContract's name"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file's bytes"),
    responses((status = 201, body = DatasetVersion), (status = 400, body = plinth_types::ApiError),
        (status = 401, body = plinth_types::ApiError), (status = 403, body = plinth_types::ApiError),
        (status = 404, body = plinth_types::ApiError), (status = 409, body = plinth_types::ApiError),
        (status = 413, body = plinth_types::ApiError, description = "larger than the upload limit; nothing stored")))]
pub async fn upload_dataset(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<DatasetVersion>), ApiErrorResponse> {
    s.platform.require_dataset_writer(&who, "upload datasets")?;
    s.platform.contract_object(&name).await?;
    let ext = upload_extension(&q.filename)
        .map_err(|m| ApiErrorResponse::new(ErrorCode::InvalidArgument, m))?;
    let limit = s.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let dir = std::path::absolute(s.data_dir.join("uploads"))
        .unwrap_or_else(|_| s.data_dir.join("uploads"));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io_error("cannot create upload folder", &dir, e))?;
    let (tmp, hash, len) = receive(&dir, limit, body).await?;
    if len == 0 {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ApiErrorResponse::new(
            ErrorCode::InvalidArgument,
            "upload: the request body is empty; send the file's bytes",
        ));
    }
    let stored = dir.join(format!("{hash}{ext}"));
    if let Err(e) = tokio::fs::rename(&tmp, &stored).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io_error("cannot store upload", &stored, e));
    }
    let v = s
        .platform
        .register_uploaded_dataset(&who, &name, &stored, q.filename.trim(), q.now)
        .await?;
    crate::lineage::record_dataset_version(&s, &v).await;
    Ok((StatusCode::CREATED, Json(v)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::upload_extension;

    #[test]
    fn extensions_name_the_format() {
        assert_eq!(upload_extension("w.csv").unwrap(), ".csv");
        assert_eq!(upload_extension("W.CSV.GZ").unwrap(), ".csv.gz");
        assert_eq!(upload_extension("x.parquet").unwrap(), ".parquet");
        assert_eq!(upload_extension("x.feather").unwrap(), ".feather");
        let e = upload_extension("notes.txt").unwrap_err();
        assert!(e.contains("not a readable format"), "{e}");
        assert!(upload_extension(".csv").is_err());
        assert!(
            upload_extension("../x.csv")
                .unwrap_err()
                .contains("plain file name")
        );
        assert!(upload_extension("").is_err());
    }
}
