//! Reading JSON fields the way Go's `encoding/json` decodes them into flannel's struct
//! (booleans, integers, strings, CIDRs, addresses; `null` leaves the default), and the two error
//! shapes: syntax (a wrong JSON type) and invalid (a wrong value).
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::ConfError;
use crate::json::{Fields, Json};

pub(super) fn syntax(field: &str, reason: impl Into<String>) -> ConfError {
    ConfError::Syntax {
        field: field.to_string(),
        reason: reason.into(),
    }
}

pub(super) fn invalid(
    field: &str,
    value: impl Into<String>,
    message: impl Into<String>,
) -> ConfError {
    ConfError::Invalid {
        field: field.to_string(),
        value: value.into(),
        message: message.into(),
    }
}

pub(super) fn warn_keys(fields: &Fields<'_>, context: &str, warnings: &mut Vec<String>) {
    for key in &fields.unknown {
        warnings.push(format!("unknown key {key:?} in {context} ignored"));
    }
    for (name, spellings) in &fields.duplicates {
        let list: Vec<String> = spellings.iter().map(|s| format!("{s:?}")).collect();
        warnings.push(format!(
            "{context} sets {name} more than once ({}); the last one wins",
            list.join(", ")
        ));
    }
}

/// A JSON boolean (Go `bool`): `null` leaves the default.
pub(super) fn get_bool(
    fields: &Fields<'_>,
    name: &str,
    path: &str,
) -> Result<Option<bool>, ConfError> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(syntax(
            path,
            format!("expected true or false, found {}", other.describe()),
        )),
    }
}

/// A JSON integer ≥ 0 (Go `uint`): `null` leaves the default.
pub(super) fn get_uint(
    fields: &Fields<'_>,
    name: &str,
    path: &str,
) -> Result<Option<u64>, ConfError> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(syntax(
            path,
            format!(
                "expected a non-negative integer, found {}",
                other.describe()
            ),
        )),
    }
}

/// A JSON integer (Go `int`): `null` leaves the default.
pub(super) fn get_int(
    fields: &Fields<'_>,
    name: &str,
    path: &str,
) -> Result<Option<i64>, ConfError> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(other) => Err(syntax(
            path,
            format!("expected an integer, found {}", other.describe()),
        )),
    }
}

/// A JSON string. `null` is accepted (as unset) only where flannel's field is a pointer; for its
/// address types Go hands `null` to the address parser, which refuses it.
pub(super) fn get_str<'a>(
    fields: &Fields<'a>,
    name: &str,
    path: &str,
    null_ok: bool,
) -> Result<Option<&'a str>, ConfError> {
    match fields.get(name) {
        None => Ok(None),
        Some(Json::Null) if null_ok => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(syntax(
            path,
            format!("expected a string, found {}", other.describe()),
        )),
    }
}

pub(super) fn parse_v4_cidr(field: &str, s: &str) -> Result<Ipv4Net, ConfError> {
    s.parse::<Ipv4Net>().map_err(|_| {
        if s.parse::<Ipv6Net>().is_ok() {
            invalid(field, s, format!("{field} must be an IPv4 CIDR: {s}"))
        } else {
            invalid(field, s, format!("invalid CIDR address: {s}"))
        }
    })
}

pub(super) fn parse_v6_cidr(field: &str, s: &str) -> Result<Ipv6Net, ConfError> {
    s.parse::<Ipv6Net>().map_err(|_| {
        if s.parse::<Ipv4Net>().is_ok() {
            invalid(field, s, format!("{field} must be an IPv6 CIDR: {s}"))
        } else {
            invalid(field, s, format!("invalid CIDR address: {s}"))
        }
    })
}

pub(super) fn parse_v4_addr(field: &str, s: &str) -> Result<Ipv4Addr, ConfError> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| invalid(field, s, format!("invalid IPv4 address: {s}")))
}

pub(super) fn parse_v6_addr(field: &str, s: &str) -> Result<Ipv6Addr, ConfError> {
    s.parse::<Ipv6Addr>()
        .map_err(|_| invalid(field, s, format!("invalid IPv6 address: {s}")))
}
