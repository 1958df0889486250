use std::path::PathBuf;

use crate::types::AttemptId;

/// Errors of the executor. Messages are lowercase and name the attempt, file or command.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The spec was rejected before anything ran.
    #[error("invalid attempt spec for job `{job_id}`: {message}")]
    InvalidSpec { job_id: String, message: String },

    /// The command could not be started (it does not exist, is not executable …). The attempt
    /// is recorded as ended with reason `exec_error`.
    #[error("{id}: cannot start command `{command}`: {message}")]
    Spawn {
        id: AttemptId,
        command: String,
        message: String,
    },

    #[error("{id} already exists")]
    AlreadyExists { id: AttemptId },

    #[error("{id} not found")]
    NotFound { id: AttemptId },

    /// The supervisor failed or did not report in time.
    #[error("{id}: supervisor: {message}")]
    Supervisor { id: AttemptId, message: String },

    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A state file that exists but cannot be parsed.
    #[error("{path}: corrupt state file: {message}")]
    Corrupt { path: PathBuf, message: String },

    #[error("sending {signal} to process group {pgid}: {source}")]
    Signal {
        pgid: u32,
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// Wrong use of the supervisor entry point.
    #[error("supervisor usage: {0}")]
    Usage(String),
}

impl ExecError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
