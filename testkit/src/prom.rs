//! A strict parser of the Prometheus text exposition format 0.0.4, for tests only: the unit
//! tests of the agent's metrics and health endpoints (`src/agent/metrics.rs`,
//! `src/agent/http.rs`) and the end-to-end scrape in `tests/e2e_status.rs`. It checks what a
//! scraper relies on and the encoder could get wrong; the agent never parses an exposition.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text format 0.0.4 strictly: `# HELP`/`# TYPE` lines, then samples of that
/// family; metric and label names valid; label values quoted with escapes; values floats;
/// a family declared once, its samples contiguous, no sample repeated. Returns the samples
/// and the declared type per family.
pub fn exposition(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
    let mut samples = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut finished: BTreeSet<String> = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            match kw {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(at(format!("unknown type {t:?}")));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at("family declared twice".into()));
                    }
                    if let Some(prev) = current.replace(name.to_string()) {
                        finished.insert(prev);
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let s = sample_line(line).map_err(at)?;
        let family = family_of(&s.name, &types)
            .ok_or_else(|| at(format!("sample {} has no # TYPE", s.name)))?;
        if finished.contains(&family) || current.as_deref() != Some(family.as_str()) {
            return Err(at(format!("samples of {family} are not contiguous")));
        }
        if types[&family] == "counter" && !s.name.ends_with("_total") {
            return Err(at("counter without _total".into()));
        }
        if !seen.insert((s.name.clone(), format!("{:?}", s.labels))) {
            return Err(at("sample repeated".into()));
        }
        samples.push(s);
    }
    Ok((samples, types))
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_string());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return Some(base.to_string());
            }
        }
    }
    None
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sample_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if body[start..].starts_with('}') {
                rest = &body[start + 1..];
                break;
            }
            let eq = body[start..].find('=').ok_or("label without =")? + start;
            let key = &body[start..eq];
            if !valid_name(key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            if !body[eq + 1..].starts_with('"') {
                return Err("label value not quoted".into());
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} repeated"));
            }
            if chars.peek().is_some_and(|(_, c)| *c == ',') {
                chars.next();
            }
        }
    }
    let mut parts = rest.split_whitespace();
    let value = parts.next().ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The value of the sample `name` with exactly `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::exposition;

    #[test]
    fn parser_rejects_broken_expositions() {
        let bad = [
            "weft_x 1\n",                                           // no TYPE
            "# TYPE weft_x gauge\nweft_x{a=\"1} 1\n",               // unterminated
            "# TYPE weft_x gauge\nweft_x{a=1} 1\n",                 // unquoted
            "# TYPE weft_x gauge\nweft_x one\n",                    // bad value
            "# TYPE weft_x counter\nweft_x 1\n",                    // counter without _total
            "# TYPE weft_x gauge\nweft_x 1\nweft_x 2\n",            // repeated
            "# TYPE weft_x gauge\n# TYPE weft_y gauge\nweft_x 1\n", // not contiguous
            "# TYPE weft_x gauge\nweft_x{a=\"\\q\"} 1\n",           // bad escape
            "# TYPE 1x gauge\n",                                    // bad name
        ];
        for text in bad {
            assert!(exposition(text).is_err(), "accepted {text:?}");
        }
        let (s, _) = exposition(
            "# HELP weft_x x\n# TYPE weft_x gauge\nweft_x{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5 123\n",
        )
        .expect("valid");
        assert_eq!(s[0].labels["a"], "q\"\\\n");
        assert_eq!(s[0].value, 1.5);
    }
}
