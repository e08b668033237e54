//! Payload fields a workflow marks as personal (issue #32).
//!
//! A workflow lists payload paths in `personal: ["patient.name",
//! "$.order.address"]`; the values there are sealed under the recipient's
//! data key where the trigger enters the log, so an erasure reaches them.
//!
//! Syntax: an optional `$.`, then keys separated by dots; a key is letters,
//! digits, `_` and `-`. An array met on the way applies the rest of the path
//! to each element (`items.sku` is every item's `sku`). A path that ends on
//! an object or array covers every value below it. Strings are sealed as
//! they are; numbers and booleans as their JSON text (they read back as
//! strings); `null` and missing fields are left alone.

use serde_json::Value;

use crate::error::Violations;

/// Paths one workflow may mark personal.
pub const MAX_PATHS: usize = 32;
/// Keys in one path.
pub const MAX_DEPTH: usize = 8;
/// Bytes of one key.
pub const MAX_KEY_BYTES: usize = 64;

/// The keys of a path, or why it is not one.
pub fn parse(path: &str) -> Result<Vec<&str>, String> {
    let body = path.strip_prefix("$.").unwrap_or(path);
    let keys: Vec<&str> = body.split('.').collect();
    if keys.len() > MAX_DEPTH {
        return Err(format!(
            "{path:?} has {} levels, over the limit of {MAX_DEPTH}",
            keys.len()
        ));
    }
    for k in &keys {
        let ok = !k.is_empty()
            && k.len() <= MAX_KEY_BYTES
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(format!(
                "{:?} is not a payload path like \"patient.name\" (keys of letters, digits, _ and - up to {MAX_KEY_BYTES} bytes, separated by dots, an optional leading \"$.\")",
                crate::error::excerpt(path, 80)
            ));
        }
    }
    Ok(keys)
}

/// Checks a workflow's `personal` list: its size and each path.
pub fn validate(v: &mut Violations, field: &str, paths: &[String]) {
    if paths.len() > MAX_PATHS {
        v.push(
            field,
            format!(
                "{} paths exceed the limit of {MAX_PATHS} per workflow",
                paths.len()
            ),
        );
        return;
    }
    for (i, p) in paths.iter().enumerate() {
        if let Err(e) = parse(p) {
            v.push(format!("{field}[{i}]"), e);
        }
    }
}

/// Replaces every value the paths cover in `payload` by `seal(text)`,
/// skipping values for which `skip(text)` holds (already sealed); returns
/// how many were replaced. Invalid paths cover nothing.
pub fn seal_in_place(
    payload: &mut Value,
    paths: &[String],
    skip: &dyn Fn(&str) -> bool,
    seal: &mut dyn FnMut(&str) -> String,
) -> usize {
    let mut n = 0;
    for p in paths.iter().take(MAX_PATHS) {
        if let Ok(keys) = parse(p) {
            n += at_path(payload, &keys, skip, seal);
        }
    }
    n
}

fn at_path(
    v: &mut Value,
    keys: &[&str],
    skip: &dyn Fn(&str) -> bool,
    seal: &mut dyn FnMut(&str) -> String,
) -> usize {
    match (keys.split_first(), v) {
        (None, v) => every_leaf(v, skip, seal),
        (Some(_), Value::Array(items)) => {
            items.iter_mut().map(|i| at_path(i, keys, skip, seal)).sum()
        }
        (Some((k, rest)), Value::Object(map)) => match map.get_mut(*k) {
            Some(child) => at_path(child, rest, skip, seal),
            None => 0,
        },
        _ => 0,
    }
}

fn every_leaf(
    v: &mut Value,
    skip: &dyn Fn(&str) -> bool,
    seal: &mut dyn FnMut(&str) -> String,
) -> usize {
    let text = match v {
        Value::Null => return 0,
        Value::String(s) if skip(s) => return 0,
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => return items.iter_mut().map(|i| every_leaf(i, skip, seal)).sum(),
        Value::Object(map) => return map.values_mut().map(|i| every_leaf(i, skip, seal)).sum(),
    };
    *v = Value::String(seal(&text));
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seal(payload: &mut Value, paths: &[&str]) -> usize {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        seal_in_place(payload, &paths, &|s| s.starts_with('#'), &mut |s| {
            format!("#{s}")
        })
    }

    #[test]
    fn paths_reach_nested_fields_array_elements_and_whole_subtrees() {
        let mut p = json!({
            "patient": {"name": "Ada", "age": 36, "ward": null},
            "items": [{"sku": "A1", "qty": 1}, {"sku": "B2"}],
            "order": {"address": {"street": "1 Rue", "zip": "75001"}},
            "public": "stays"
        });
        let n = seal(
            &mut p,
            &[
                "$.patient.name",
                "patient.age",
                "patient.ward",
                "items.sku",
                "order.address",
                "missing.x",
            ],
        );
        assert_eq!(n, 6);
        assert_eq!(
            p,
            json!({
                "patient": {"name": "#Ada", "age": "#36", "ward": null},
                "items": [{"sku": "#A1", "qty": 1}, {"sku": "#B2"}],
                "order": {"address": {"street": "#1 Rue", "zip": "#75001"}},
                "public": "stays"
            })
        );
        // Overlapping paths and a second pass seal nothing twice.
        assert_eq!(seal(&mut p, &["order", "order.address.zip"]), 0);
    }

    #[test]
    fn bad_paths_and_too_many_are_refused_naming_the_entry() {
        let mut v = Violations::default();
        let paths: Vec<String> = ["patient.name", "a..b", "x y", &"k.".repeat(9)[..17], ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        validate(&mut v, "personal", &paths);
        let fields: Vec<&str> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["personal[1]", "personal[2]", "personal[3]", "personal[4]"]
        );
        assert!(
            v.0[2].description.contains("levels"),
            "{}",
            v.0[2].description
        );
        let mut v = Violations::default();
        validate(&mut v, "personal", &vec!["a".to_string(); MAX_PATHS + 1]);
        assert_eq!(v.0[0].field, "personal");
        assert!(v.0[0].description.contains("limit of 32"));
    }
}
