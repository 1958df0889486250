//! Shared vocabulary of Plinth: error codes, roles, identities, resource documents and the
//! request/response types of the HTTP API. No I/O, no async runtime.

pub mod api;
pub mod audit;
pub mod error;
pub mod identity;
pub mod job;
pub mod resource;
pub mod spec;

pub use error::{ApiError, ErrorCode};
pub use identity::{Identity, Role};
pub use resource::{API_VERSION, Document, ObjectMeta, ResourceView, StoredObject};
