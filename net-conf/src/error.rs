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

/// At most `max` characters of `text` for an error message or a log line, with the full length
/// noted when cut: a malformed key or value in etcd can be up to 1.5 MiB, and it must not be
/// copied into every warning about it.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn excerpt_cuts_long_text_on_a_char_boundary() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("abcdef", 3), "abc… (6 bytes in all)");
        assert_eq!(excerpt("ééé", 2), "éé… (6 bytes in all)");
        assert_eq!(excerpt("", 0), "");
    }
}
