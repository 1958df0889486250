//! Turns text into validated values: multi-document resource YAML into typed, checked objects
//! (with errors naming file, document, field path and problem), and the server's config file plus
//! `PLINTH_*` environment into a `ServerConfig`. Knows nothing of the network or the store.

pub mod documents;
pub mod kinds;
pub mod server;

pub use documents::{DocumentError, parse_yaml_documents};
pub use kinds::{
    KindInfo, Reference, Scope, ValidObject, lookup_kind, validate_document, validate_name,
};
pub use server::{ConfigError, ExecutorKind, LogFormat, ServerConfig, ServerOverrides};
