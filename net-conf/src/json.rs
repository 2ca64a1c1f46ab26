//! A small JSON reader that behaves like Go's `encoding/json` where flannel's formats depend on
//! it: object keys keep their order and duplicates (so "the last one wins", as in Go), and field
//! names are matched case-insensitively with Go's folding rules. Plus Go-compatible output helpers
//! (string escaping, `json.Compact`), so the values we write are byte-for-byte flannel's.
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A parsed JSON value whose objects keep key order and duplicate keys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document (trailing non-whitespace is an error, as in Go).
    pub(crate) fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// A short description for error messages: `string "abc"`, `number 1.5`, `an object`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Json::Null => "null".to_string(),
            Json::Bool(b) => format!("boolean {b}"),
            Json::Number(n) => format!("number {n}"),
            Json::String(s) => format!("string {s:?}"),
            Json::Array(_) => "an array".to_string(),
            Json::Object(_) => "an object".to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

/// A JSON object whose values are kept as their raw text (Go's `json.RawMessage`), in order.
pub(crate) struct RawObject(pub(crate) Vec<(String, Box<RawValue>)>);

impl RawObject {
    /// Parses bytes holding one JSON object; anything else is an error.
    pub(crate) fn parse_bytes(bytes: &[u8]) -> Result<RawObject, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Parses text holding one JSON object; anything else is an error.
    pub(crate) fn parse(text: &str) -> Result<RawObject, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawObjectVisitor)
    }
}

struct RawObjectVisitor;

impl<'de> Visitor<'de> for RawObjectVisitor {
    type Value = RawObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
            entries.push((key, value));
        }
        Ok(RawObject(entries))
    }
}

/// Go's case-insensitive field-name match (`strings.EqualFold` restricted to what can match an
/// ASCII field name): ASCII case is ignored, and the Kelvin sign `K` (U+212A) and long s `ſ`
/// (U+017F) fold to `k` and `s`, as they do in Go.
pub(crate) fn go_fold_eq(key: &str, name: &str) -> bool {
    fn fold(c: char) -> char {
        match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c => c.to_ascii_lowercase(),
        }
    }
    let mut a = key.chars().map(fold);
    let mut b = name.chars().map(fold);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

/// The values of an object's known fields, matched as Go does: for each key in document order,
/// an exact match wins, else a case-insensitive one; a later key for the same field replaces an
/// earlier one. Unknown keys are returned separately (in document order).
pub(crate) struct Fields<'a, V = Json> {
    known: &'static [&'static str],
    values: Vec<Option<&'a V>>,
    /// Keys that matched no known field.
    pub(crate) unknown: Vec<&'a str>,
    /// Fields given more than once: (field, every spelling used, in order).
    pub(crate) duplicates: Vec<(&'static str, Vec<&'a str>)>,
}

impl<'a, V> Fields<'a, V> {
    pub(crate) fn collect(entries: &'a [(String, V)], known: &'static [&'static str]) -> Self {
        let mut values: Vec<Option<&'a V>> = vec![None; known.len()];
        let mut spellings: Vec<Vec<&'a str>> = vec![Vec::new(); known.len()];
        let mut unknown = Vec::new();
        for (key, value) in entries {
            let index = known
                .iter()
                .position(|name| name == key)
                .or_else(|| known.iter().position(|name| go_fold_eq(key, name)));
            match index {
                Some(i) => {
                    values[i] = Some(value);
                    spellings[i].push(key.as_str());
                }
                None => unknown.push(key.as_str()),
            }
        }
        let duplicates = known
            .iter()
            .zip(spellings)
            .filter(|(_, s)| s.len() > 1)
            .map(|(name, s)| (*name, s))
            .collect();
        Fields {
            known,
            values,
            unknown,
            duplicates,
        }
    }

    /// The value of a known field (by its canonical name), if the object has it.
    pub(crate) fn get(&self, name: &str) -> Option<&'a V> {
        let i = self.known.iter().position(|n| *n == name)?;
        self.values[i]
    }
}

/// Appends `s` as a JSON string the way Go's `json.Marshal` writes it: `"` and `\` escaped,
/// `\n`, `\r`, `\t` short forms, other control characters as `\u00XX`, and the HTML-sensitive
/// `<`, `>`, `&` plus U+2028/U+2029 as `\uXXXX` (Go's default HTML escaping).
pub(crate) fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_u_escape(out, c),
            c if (c as u32) < 0x20 => push_u_escape(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_u_escape(out: &mut String, c: char) {
    out.push_str(&format!("\\u{:04x}", c as u32));
}

/// Go's `json.Compact` with HTML escaping, as `json.Marshal` applies it to a `json.RawMessage`:
/// whitespace outside strings removed, `<`, `>`, `&`, U+2028, U+2029 inside strings escaped.
/// `raw` must be valid JSON (callers check that first).
pub(crate) fn compact_go(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
                out.push(c);
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_u_escape(&mut out, c),
                c => out.push(c),
            }
        } else {
            match c {
                ' ' | '\t' | '\n' | '\r' => {}
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                c => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_matches_like_go() {
        assert!(go_fold_eq("network", "Network"));
        assert!(go_fold_eq("NETWORK", "Network"));
        assert!(go_fold_eq("directRouting", "DirectRouting"));
        assert!(go_fold_eq("ſubnetLen", "SubnetLen"));
        assert!(go_fold_eq("Bac\u{212A}end", "Backend"));
        assert!(!go_fold_eq("Networks", "Network"));
        assert!(!go_fold_eq("Netw", "Network"));
    }

    #[test]
    fn fields_last_wins_and_reports_unknown() {
        let Json::Object(entries) =
            Json::parse(r#"{"Network":"a","Foo":1,"network":"b"}"#).expect("valid json")
        else {
            panic!("not an object")
        };
        let fields = Fields::collect(&entries, &["Network", "SubnetLen"]);
        assert_eq!(fields.get("Network"), Some(&Json::String("b".into())));
        assert_eq!(fields.get("SubnetLen"), None);
        assert_eq!(fields.unknown, vec!["Foo"]);
        assert_eq!(
            fields.duplicates,
            vec![("Network", vec!["Network", "network"])]
        );
    }

    #[test]
    fn go_string_escapes() {
        let mut out = String::new();
        write_go_string(&mut out, "a\"b\\c\n<&>\u{1}\u{2028}é");
        assert_eq!(out, r#""a\"b\\c\n\u003c\u0026\u003e\u0001\u2028é""#);
    }

    #[test]
    fn compact_removes_whitespace_outside_strings_only() {
        assert_eq!(
            compact_go("{ \"VNI\" : 1,\n \"VtepMAC\": \"a b\\\" <\" }"),
            r#"{"VNI":1,"VtepMAC":"a b\" \u003c"}"#
        );
    }
}
