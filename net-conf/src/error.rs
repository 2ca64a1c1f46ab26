//! Errors of the pure layer. Each names the field (path) and the value at fault.
use thiserror::Error;

/// A network configuration that cannot be used. `Display` gives flannel's text where flannel has
/// one, followed by the field and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfError {
    /// The text is not JSON, or a field has the wrong JSON type.
    #[error("invalid network config: {field}: {reason}")]
    Syntax { field: String, reason: String },
    /// A field has a value flannel would refuse; `message` is flannel's text.
    #[error("{message} (field {field}, value {value:?})")]
    Invalid {
        field: String,
        value: String,
        message: String,
    },
}

/// A lease value or subnet key that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseError {
    #[error("malformed subnet key {key:?}: {reason}")]
    Key { key: String, reason: String },
    #[error("malformed lease value: {reason}")]
    Value { reason: String },
}
