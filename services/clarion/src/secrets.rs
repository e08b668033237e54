//! Secrets in the configuration kept out of the configuration file: any key
//! `NAME-file` (in the file or as `CLARION__..._FILE` in the environment)
//! names a file whose contents become `NAME`, trailing newline removed, as
//! container secrets are mounted. `NAME` itself can also come from the
//! environment (`CLARION__PROVIDERS__TWILIO__AUTH_TOKEN`). See docs/security.md.

use figment::value::{Dict, Value};

const SUFFIX: &str = "-file";

/// Replaces every `NAME-file` key of the tree by `NAME` = the file's text.
pub fn resolve_files(tree: &mut Value) -> Result<(), String> {
    if let Value::Dict(_, dict) = tree {
        resolve_dict(dict, "")?;
    }
    Ok(())
}

fn resolve_dict(dict: &mut Dict, path: &str) -> Result<(), String> {
    let file_keys: Vec<String> = dict
        .keys()
        .filter(|k| k.ends_with(SUFFIX) && k.len() > SUFFIX.len())
        .cloned()
        .collect();
    for key in file_keys {
        let field = format!("{path}{key}");
        let Some(Value::String(tag, file)) = dict.remove(&key) else {
            return Err(format!("{field}: must be a file path"));
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("{field}: cannot read {file:?}: {e}"))?;
        let secret = text.strip_suffix('\n').unwrap_or(&text);
        let secret = secret.strip_suffix('\r').unwrap_or(secret);
        let name = key[..key.len() - SUFFIX.len()].to_string();
        dict.insert(name, Value::String(tag, secret.to_string()));
    }
    for (k, v) in dict.iter_mut() {
        match v {
            Value::Dict(_, inner) => resolve_dict(inner, &format!("{path}{k}."))?,
            // Arrays of tables (`[[providers.push.apps]]`) hold secrets too.
            Value::Array(_, items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Dict(_, inner) = item {
                        resolve_dict(inner, &format!("{path}{k}[{i}]."))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
