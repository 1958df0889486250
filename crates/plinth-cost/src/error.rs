//! The one error type of the cost engine.

use plinth_types::ErrorCode;
use plinth_types::spec::Procurement;

/// What went wrong, in terms a caller can act on. Messages are lowercase and name the input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CostError {
    /// A usage record (or an estimate) names a pool and procurement with no price.
    #[error("pool {pool:?} has no {procurement} price")]
    MissingPrice { pool: String, procurement: String },
    /// A money amount, a rate or a quantity is negative, NaN or infinite.
    #[error("{what}: {value} is not a finite, non-negative amount")]
    InvalidAmount { what: String, value: f64 },
    /// Two amounts that must be in one currency are not.
    #[error("{what}: currency {found} does not match {expected}")]
    CurrencyMismatch {
        what: String,
        expected: String,
        found: String,
    },
    /// A currency code is not three upper-case ASCII letters (ISO 4217).
    #[error("{what}: currency {value:?} is not an ISO 4217 code (three upper-case letters)")]
    InvalidCurrency { what: String, value: String },
    /// A record id arrived twice with different content.
    #[error("usage record {id:?} was already ingested with different content")]
    ConflictingDuplicate { id: String },
    /// A usage record is malformed.
    #[error("usage record {id:?}: {reason}")]
    InvalidRecord { id: String, reason: String },
    /// Any other bad argument (a window, a dimension, a budget, an option).
    #[error("{what}: {reason}")]
    InvalidArgument { what: String, reason: String },
    /// Writing an export failed.
    #[error("writing {what}: {reason}")]
    Write { what: String, reason: String },
}

impl CostError {
    /// The shared error code this maps to (HTTP status and CLI exit code follow from it).
    pub fn code(&self) -> ErrorCode {
        match self {
            CostError::ConflictingDuplicate { .. } => ErrorCode::Conflict,
            CostError::Write { .. } => ErrorCode::Internal,
            _ => ErrorCode::InvalidArgument,
        }
    }

    pub(crate) fn missing_price(pool: &str, procurement: Procurement) -> Self {
        CostError::MissingPrice {
            pool: pool.to_string(),
            procurement: procurement_name(procurement).to_string(),
        }
    }

    pub(crate) fn arg(what: impl Into<String>, reason: impl Into<String>) -> Self {
        CostError::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// `on_demand`, `reserved` or `spot`, as in resource documents.
pub fn procurement_name(p: Procurement) -> &'static str {
    match p {
        Procurement::OnDemand => "on_demand",
        Procurement::Reserved => "reserved",
        Procurement::Spot => "spot",
    }
}

/// An amount of money for people: two decimals, or six below a cent (a short job's cost), so
/// that small spend does not print as 0.00.
pub fn format_amount(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 {
        format!("{x:.6}")
    } else {
        format!("{x:.2}")
    }
}

/// Checks that `value` is finite and not negative.
pub(crate) fn check_amount(what: impl FnOnce() -> String, value: f64) -> Result<f64, CostError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(CostError::InvalidAmount {
            what: what(),
            value,
        })
    }
}

/// Checks an ISO 4217 shape (three upper-case ASCII letters).
pub(crate) fn check_currency(what: &str, value: &str) -> Result<(), CostError> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(CostError::InvalidCurrency {
            what: what.to_string(),
            value: value.to_string(),
        })
    }
}
