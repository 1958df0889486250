//! Durable state files: atomic JSON writes (temp + fsync + rename + fsync of the directory) and
//! durable appends of JSON lines.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ExecError;

pub(crate) const ATTEMPT_FILE: &str = "attempt.json";
pub(crate) const PID_FILE: &str = "pid.json";
pub(crate) const STOP_FILE: &str = "stop.json";
pub(crate) const STATUS_FILE: &str = "status.json";
pub(crate) const EXIT_FILE: &str = "exit.json";
pub(crate) const SUPERVISOR_LOG: &str = "supervisor.log";
pub(crate) const USAGE_FILE: &str = "usage.jsonl";

/// Writes `value` as JSON to `path` atomically. With `durable`, the data and the rename are
/// fsynced so the file survives a crash of the machine.
pub(crate) fn write_json<T: Serialize>(
    path: &Path,
    value: &T,
    durable: bool,
) -> Result<(), ExecError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| ExecError::Corrupt {
        path: path.to_owned(),
        message: format!("cannot serialize: {e}"),
    })?;
    bytes.push(b'\n');
    let tmp = temp_path(path);
    {
        let mut f = File::create(&tmp).map_err(|e| ExecError::io(&tmp, "create", e))?;
        f.write_all(&bytes)
            .map_err(|e| ExecError::io(&tmp, "write", e))?;
        if durable {
            f.sync_all().map_err(|e| ExecError::io(&tmp, "fsync", e))?;
        }
    }
    fs::rename(&tmp, path).map_err(|e| ExecError::io(path, "rename into place", e))?;
    if durable {
        sync_parent(path)?;
    }
    Ok(())
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ExecError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ExecError::io(path, "read", e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ExecError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Appends one JSON line with a single `write` on an `O_APPEND` file (so concurrent writers do
/// not interleave), then fsyncs it.
pub(crate) fn append_json_line<T: Serialize>(path: &Path, value: &T) -> Result<(), ExecError> {
    let mut line = serde_json::to_vec(value).map_err(|e| ExecError::Corrupt {
        path: path.to_owned(),
        message: format!("cannot serialize: {e}"),
    })?;
    line.push(b'\n');
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ExecError::io(path, "open for append", e))?;
    f.write_all(&line)
        .map_err(|e| ExecError::io(path, "append", e))?;
    f.sync_all().map_err(|e| ExecError::io(path, "fsync", e))?;
    if !existed {
        sync_parent(path)?;
    }
    Ok(())
}

pub(crate) fn create_dir_all(path: &Path) -> Result<(), ExecError> {
    fs::create_dir_all(path).map_err(|e| ExecError::io(path, "create directory", e))
}

fn sync_parent(path: &Path) -> Result<(), ExecError> {
    if let Some(dir) = path.parent() {
        let d = File::open(dir).map_err(|e| ExecError::io(dir, "open directory", e))?;
        d.sync_all()
            .map_err(|e| ExecError::io(dir, "fsync directory", e))?;
    }
    Ok(())
}

/// Creates `path` with `value` only if it does not exist yet (temp file + `link(2)`, which fails
/// when the target exists). Returns the value now stored: `value`, or what was there before.
pub(crate) fn create_json_once<T: Serialize + DeserializeOwned>(
    path: &Path,
    value: T,
) -> Result<T, ExecError> {
    let tmp = temp_path(path);
    write_json(&tmp, &value, true)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(value)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match read_json(path)? {
            Some(existing) => Ok(existing),
            None => Ok(value),
        },
        Err(e) => Err(ExecError::io(path, "create", e)),
    }
}

/// A temp file next to `path`, unique per process and call.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{file_name}.{}.{n}.tmp", std::process::id()))
}
