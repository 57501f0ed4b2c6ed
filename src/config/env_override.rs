//! `NATSHOOK__…` environment overrides, entries of `[[endpoints]]`, `[[events]]` and
//! `[[ingress.routes]]` included. figment's `Env` provider nests keys at `__`, but a
//! nested map cannot index into an array (it would replace the whole array), so this
//! module picks the entry, by endpoint name or by index, and lets figment merge the
//! entry's keys as usual.

use figment::providers::{Env, Serialized};
use figment::value::{Dict, Value};
use figment::Figment;

use super::load::figment_problems;
use super::{Problem, ENV_PREFIX};

/// The arrays of tables whose entries an override addresses, as key paths.
const ARRAYS: &[&str] = &["endpoints", "events", "ingress.routes"];

/// Whether `key` lies in one of the arrays whose entries an override addresses:
/// `NATSHOOK__ENDPOINTS__CRM__URL` (by name), `NATSHOOK__EVENTS__0__SUBJECT` or
/// `NATSHOOK__INGRESS__ROUTES__0__PATH` (by index).
fn in_array(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ARRAYS.iter().any(|a| {
        key.strip_prefix(a)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// The value at the dotted key path `path` of `dict`.
fn find(dict: &Dict, path: &str) -> Option<Value> {
    let mut parts = path.split('.');
    let mut value = dict.get(parts.next()?)?;
    for part in parts {
        value = value.as_dict()?.get(part)?;
    }
    Some(value.clone())
}

/// How an endpoint name is written in a variable name: shells allow only letters,
/// digits and `_`, and figment lower-cases keys.
fn env_name(name: &str) -> String {
    name.to_ascii_lowercase().replace(['-', '.'], "_")
}

/// `file` with every `NATSHOOK__…` variable merged over it, and the variables that
/// name no entry (reported with the config's other problems, so one run shows all).
pub fn apply(file: Figment) -> (Figment, Vec<Problem>) {
    let env = Env::prefixed(ENV_PREFIX).split("__");
    let mut figment = file.merge(env.clone().filter(|k| !in_array(k.as_str())));
    let overrides: Dict = match Figment::from(env.filter(|k| in_array(k.as_str()))).extract() {
        Ok(overrides) => overrides,
        Err(e) => return (figment, figment_problems(e).problems),
    };
    let mut problems = Vec::new();
    for array in ARRAYS {
        let Some(by_entry) = find(&overrides, array) else {
            continue;
        };
        if let Some(entries) = patch_array(&figment, array, by_entry, &mut problems) {
            figment = figment.merge(Serialized::default(array, entries));
        }
    }
    (figment, problems)
}

/// The array `array` of `figment` with each addressed entry's keys overridden; a
/// variable that names no entry is added to `problems` and the others still apply.
fn patch_array(
    figment: &Figment,
    array: &str,
    by_entry: Value,
    problems: &mut Vec<Problem>,
) -> Option<Vec<Value>> {
    let var = |entry: &str| {
        let mut v = format!(
            "{ENV_PREFIX}{}",
            array.to_ascii_uppercase().replace('.', "__")
        );
        if !entry.is_empty() {
            v.push_str("__");
            v.push_str(&entry.to_ascii_uppercase());
        }
        v
    };
    let example = if array == "endpoints" {
        format!("{}__<name or index>__URL", var(""))
    } else {
        format!("{}__<index>__<KEY>", var(""))
    };
    let Value::Dict(_, by_entry) = by_entry else {
        problems.push(Problem {
            path: var(""),
            message: format!("address one key of one entry, e.g. {example}"),
        });
        return None;
    };
    let mut entries = match figment.find_value(array) {
        Ok(Value::Array(_, entries)) => entries,
        _ => Vec::new(),
    };
    for (entry, keys) in by_entry {
        let picked = match keys {
            Value::Dict(..) => pick(array, &entries, &entry),
            _ => Err(format!("address one key of the entry, e.g. {example}")),
        };
        let i = match picked {
            Ok(i) => i,
            Err(message) => {
                problems.push(Problem {
                    path: var(&entry),
                    message,
                });
                continue;
            }
        };
        let merged = Figment::from(Serialized::defaults(&entries[i]))
            .merge(Serialized::defaults(&keys))
            .extract::<Value>();
        match merged {
            Ok(value) => entries[i] = value,
            Err(e) => problems.extend(figment_problems(e).problems.into_iter().map(|p| Problem {
                path: var(&entry),
                message: p.to_string(),
            })),
        }
    }
    Some(entries)
}

/// Which entry `selector` (already lower-cased) names: an index, or for endpoints a
/// name written as in a variable name.
fn pick(array: &str, entries: &[Value], selector: &str) -> Result<usize, String> {
    if let Ok(i) = selector.parse::<usize>() {
        return if i < entries.len() {
            Ok(i)
        } else {
            Err(format!(
                "no entry {i}: the config has {} {array} (indexes start at 0)",
                entries.len()
            ))
        };
    }
    if array != "endpoints" {
        return Err(format!("{array} entries are addressed by index (0, 1, …)"));
    }
    let names: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.find_ref("name").and_then(Value::as_str))
        .collect();
    let matches: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.find_ref("name")
                .and_then(Value::as_str)
                .is_some_and(|n| env_name(n) == selector)
        })
        .map(|(i, _)| i)
        .collect();
    match matches[..] {
        [i] => Ok(i),
        [] => Err(format!(
            "no endpoint named '{selector}' (endpoints: {}; write '-' and '.' as '_', or use the index)",
            names.join(", ")
        )),
        _ => Err(format!(
            "{} endpoints have this name once written as a variable name; use the index",
            matches.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_array_keys_are_taken_apart() {
        assert!(in_array("endpoints.crm.url"));
        assert!(in_array("EVENTS.0.subject"));
        assert!(in_array("endpoints"));
        assert!(in_array("ingress.routes.0.path"));
        assert!(!in_array("ingress.listen"));
        assert!(!in_array("endpoints_extra.x"));
        assert!(!in_array("defaults.timeout"));
    }

    fn endpoints(names: &[&str]) -> Vec<Value> {
        names
            .iter()
            .map(|n| {
                let mut d = Dict::new();
                d.insert("name".into(), Value::from(n.to_string()));
                Value::from(d)
            })
            .collect()
    }

    #[test]
    fn entries_are_picked_by_index_or_variable_style_name() {
        let e = endpoints(&["crm", "billing-eu.v2", "7"]);
        assert_eq!(pick("endpoints", &e, "0"), Ok(0));
        assert_eq!(pick("endpoints", &e, "billing_eu_v2"), Ok(1));
        assert_eq!(pick("endpoints", &e, "crm"), Ok(0));
        // All digits is an index, never a name.
        assert!(pick("endpoints", &e, "7")
            .unwrap_err()
            .contains("no entry 7"));
        let err = pick("endpoints", &e, "crn").unwrap_err();
        assert!(
            err.contains("no endpoint named 'crn'") && err.contains("billing-eu.v2"),
            "{err}"
        );
        let twins = endpoints(&["a-b", "a.b"]);
        assert!(pick("endpoints", &twins, "a_b")
            .unwrap_err()
            .contains("use the index"));
        assert!(pick("events", &e, "crm").unwrap_err().contains("by index"));
    }
}
