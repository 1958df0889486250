//! The `mlflow-artifacts` routes: uploads streamed into a content-addressed directory (the
//! sha256 recorded in the store), downloads streamed back, one-level listings.
//!
//! Layout under the artifact root: `blobs/sha256/<first two hex>/<hex>` holds each distinct
//! content once; `tmp/` holds uploads in progress. An upload becomes visible only after its
//! bytes are complete, synced and renamed into place and the store has recorded the path, so a
//! failed or oversized upload leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{Extensions, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use plinth_store::tracking::ArtifactEntry;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt as _, ReadBuf};

use crate::api::{authorize, decode, now_ms};
use crate::{MlflowError, RegistryState};

/// Bytes read from disk per download frame.
const READ_CHUNK: usize = 64 * 1024;

/// Checks an artifact path: relative, `/`-separated, no empty, `.` or `..` segment, no
/// backslash or NUL. Returns it without a trailing slash.
pub fn check_path(path: &str) -> Result<&str, MlflowError> {
    let p = path.strip_suffix('/').unwrap_or(path);
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.contains('\\')
        || p.contains('\0')
        || p.split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(MlflowError::invalid(format!(
            "invalid artifact path {path:?}: it must be relative and may not contain empty, \
             '.' or '..' segments, backslashes or NUL"
        )));
    }
    Ok(p)
}

pub(crate) fn blob_path(root: &FsPath, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    root.join("blobs")
        .join("sha256")
        .join(&hex[..hex.len().min(2)])
        .join(hex)
}

fn io_err(what: &str, path: &FsPath, e: std::io::Error) -> MlflowError {
    MlflowError::internal(format!("{what} {} failed: {e}", path.display()))
}

/// `GET /api/2.0/mlflow-artifacts/artifacts?path=DIR`: the direct children of `DIR`.
pub(crate) async fn list(
    State(st): State<RegistryState>,
    RawQuery(query): RawQuery,
    ext: Extensions,
) -> Response {
    let result = async {
        authorize(&ext, false)?;
        let mut dir = String::new();
        for pair in query.as_deref().unwrap_or("").split('&') {
            if let Some(v) = pair.strip_prefix("path=") {
                dir = decode(v)?;
            }
        }
        let dir = if dir.is_empty() {
            String::new()
        } else {
            check_path(&dir)?.to_owned()
        };
        let entries = st.store.list_artifacts(&dir).await?;
        let prefix_len = if dir.is_empty() { 0 } else { dir.len() + 1 };
        let mut children: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for e in entries {
            let rel = &e.path[prefix_len..];
            match rel.split_once('/') {
                Some((first, _)) => {
                    children.insert(first.to_owned(), None);
                }
                None => {
                    children.insert(rel.to_owned(), Some(e.size));
                }
            }
        }
        let files: Vec<Value> = children
            .into_iter()
            .map(|(path, size)| match size {
                Some(n) => json!({"path": path, "is_dir": false, "file_size": n}),
                None => json!({"path": path, "is_dir": true}),
            })
            .collect();
        Ok::<_, MlflowError>(json!({"files": files}))
    }
    .await;
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT` (upload), `GET` (download) and `DELETE` of one artifact path.
pub(crate) async fn object(
    State(st): State<RegistryState>,
    method: Method,
    Path(path): Path<String>,
    ext: Extensions,
    body: Body,
) -> Response {
    let result = async {
        let write = method != Method::GET && method != Method::HEAD;
        authorize(&ext, write)?;
        let path = check_path(&path)?.to_owned();
        match method {
            Method::PUT => upload(&st, &path, body).await.map(|()| json_ok()),
            Method::GET => download(&st, &path).await,
            Method::DELETE => {
                let n = st.store.delete_artifacts(&path).await?;
                if n == 0 {
                    return Err(MlflowError::not_found(format!("no artifact at {path:?}")));
                }
                Ok(json_ok())
            }
            m => Err(MlflowError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "ENDPOINT_NOT_FOUND",
                format!("{m} is not supported on artifacts; use GET, PUT or DELETE"),
            )),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn json_ok() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

async fn upload(st: &RegistryState, path: &str, mut body: Body) -> Result<(), MlflowError> {
    let tmp_dir = st.artifact_root.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(|e| io_err("creating", &tmp_dir, e))?;
    let tmp = tmp_dir.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| io_err("creating", &tmp, e))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let written = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                MlflowError::invalid(format!("reading the upload of {path:?} failed: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                size += data.len() as u64;
                if size > st.max_upload_bytes {
                    return Err(MlflowError::invalid(format!(
                        "the upload of {path:?} is larger than the limit of {} bytes",
                        st.max_upload_bytes
                    )));
                }
                hasher.update(&data);
                file.write_all(&data)
                    .await
                    .map_err(|e| io_err("writing", &tmp, e))?;
            }
        }
        file.sync_all()
            .await
            .map_err(|e| io_err("syncing", &tmp, e))?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let blob = blob_path(&st.artifact_root, &digest);
    // Placing the blob and recording its path happen while no retention sweep deletes blobs.
    let _guard = st.gc_lock.read().await;
    let placed = async {
        if let Some(parent) = blob.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err("creating", parent, e))?;
        }
        if tokio::fs::try_exists(&blob).await.unwrap_or(false) {
            let _ = tokio::fs::remove_file(&tmp).await;
        } else {
            tokio::fs::rename(&tmp, &blob)
                .await
                .map_err(|e| io_err("moving an upload to", &blob, e))?;
        }
        Ok::<_, MlflowError>(())
    }
    .await;
    if let Err(e) = placed {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    st.store
        .put_artifact(
            &ArtifactEntry {
                path: path.to_owned(),
                digest,
                size: size as i64,
            },
            now_ms(),
        )
        .await?;
    Ok(())
}

async fn download(st: &RegistryState, path: &str) -> Result<Response, MlflowError> {
    let entry = st
        .store
        .get_artifact(path)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("no artifact at {path:?}")))?;
    let blob = blob_path(&st.artifact_root, &entry.digest);
    let file = tokio::fs::File::open(&blob)
        .await
        .map_err(|e| io_err("opening the content of artifact at", &blob, e))?;
    let body = Body::new(FileBody {
        file,
        buf: vec![0; READ_CHUNK],
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, entry.size)
        .header("x-plinth-digest", entry.digest)
        .body(body)
        .map_err(|e| MlflowError::internal(format!("building the download of {path:?}: {e}")))
}

/// A response body that reads a file a chunk at a time.
struct FileBody {
    file: tokio::fs::File,
    buf: Vec<u8>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let mut rb = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let filled = rb.filled();
                if filled.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(filled)))))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_their_directory_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a/./b",
            "a//b",
            "a\\b",
            "x/..",
            "a\0b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            check_path("1/abc/artifacts/model/MLmodel").ok(),
            Some("1/abc/artifacts/model/MLmodel")
        );
        assert_eq!(check_path("dir/").ok(), Some("dir"));
    }

    #[test]
    fn blobs_are_sharded_by_digest() {
        let p = blob_path(FsPath::new("/r"), "sha256:abcdef");
        assert_eq!(p, PathBuf::from("/r/blobs/sha256/ab/abcdef"));
    }
}
