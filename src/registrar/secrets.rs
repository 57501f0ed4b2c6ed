//! A runtime endpoint's secrets: the form the registry keeps them in (plain strings,
//! newest first), new ones, and the list a rotation leaves signing through its grace.

use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{Map, Value};

use super::{invalid, problem, RegistrarError, DEFAULT_GRACE};
use crate::config::{api, past_max_duration, MAX_DURATION};
use crate::signing::Scheme;

/// Secrets kept beside a new one during a rotation's grace, at most.
const MAX_PREVIOUS_SECRETS: usize = 3;

/// Stores a `secret` given as `{"value": "…"}` (or a list of them) as the plain
/// string it stands for: the create's answer shows the secret as a string, and a
/// rotation keeps the secret it replaces during its grace only in that form.
pub(super) fn plain_secret(body: &mut Map<String, Value>) {
    fn plain(v: &mut Value) {
        let inner = match v {
            Value::Object(o) if o.len() == 1 => o.get("value").and_then(Value::as_str),
            _ => None,
        };
        if let Some(inner) = inner.map(str::to_string) {
            *v = Value::String(inner);
        }
    }
    match body.get_mut("secret") {
        Some(Value::Array(list)) => list.iter_mut().for_each(plain),
        Some(v) => plain(v),
        None => {}
    }
}

/// The secret that signs, as the create's answer shows it: the first of a list.
pub(super) fn signing_secret(stored: Option<&Value>) -> Value {
    match stored {
        Some(Value::Array(list)) => list.first().cloned().unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

/// A new secret: `whsec_` and 32 random bytes in base64 for Standard Webhooks, else
/// 32 random bytes as 64 hex characters.
pub(super) fn new_secret(scheme: Scheme) -> Result<String, RegistrarError> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| RegistrarError::Randomness(e.to_string()))?;
    Ok(match scheme {
        Scheme::Standard => format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
        _ => hex::encode(key),
    })
}

/// A rotation's grace as asked (a duration such as `"24h"`; [`DEFAULT_GRACE`] when
/// `None`).
pub(super) fn grace(asked: Option<&str>) -> Result<Duration, RegistrarError> {
    let Some(t) = asked else {
        return Ok(DEFAULT_GRACE);
    };
    let refused = |message: String| invalid("rotation", vec![problem("grace", message)]);
    match humantime::parse_duration(t.trim()) {
        // Past the cap every config duration has, the end of the grace would overflow
        // the clock.
        Ok(d) if d > MAX_DURATION => Err(refused(past_max_duration(t))),
        Ok(d) => Ok(d),
        Err(e) => Err(refused(format!(
            "'{t}' is not a duration such as \"24h\": {e}"
        ))),
    }
}

/// Puts `secret` first in the record `value`, keeping the secrets that sign now until
/// `grace` from `now` ends: during an earlier rotation's grace all of them (a `hex`
/// receiver may still hold only the oldest, which still signs), else the one it
/// replaces. A zero grace keeps none.
pub(super) fn rotate_into(
    value: &mut Map<String, Value>,
    secret: &str,
    grace: Duration,
    now: SystemTime,
) {
    let in_grace = api::grace_until(value, now).is_some();
    // Stored as `{"value": …}` by an older version or another tool: the grace keeps
    // only strings.
    plain_secret(value);
    let mut previous: Vec<Value> = match value.get("secret") {
        Some(Value::String(old)) => vec![old.clone().into()],
        Some(Value::Array(list)) if in_grace => list.clone(),
        Some(Value::Array(list)) => list.first().cloned().into_iter().collect(),
        _ => Vec::new(),
    };
    // Many rotations within one grace keep the new secret and the oldest ones (the
    // oldest signs for `hex`).
    while previous.len() > MAX_PREVIOUS_SECRETS {
        previous.remove(0);
    }
    match previous.is_empty() {
        false if !grace.is_zero() => {
            let mut secrets = vec![Value::from(secret)];
            secrets.extend(previous);
            value.insert("secret".into(), Value::Array(secrets));
            value.insert(
                api::GRACE_KEY.into(),
                crate::time::rfc3339_millis(now + grace).into(),
            );
        }
        _ => {
            value.insert("secret".into(), secret.into());
            value.remove(api::GRACE_KEY);
        }
    }
}
