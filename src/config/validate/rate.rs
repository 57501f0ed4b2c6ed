//! A `rate_limit` value: `"N/s"`, `"N/m"`, `"N/h"` or `"none"`. Its own small grammar,
//! read the same way for `[defaults]` and every endpoint.

use std::time::Duration;

use super::super::model::Rate;

/// Reads a `rate_limit` value; the error is the problem's message.
pub(super) fn parse_rate(text: &str) -> Result<Option<Rate>, String> {
    let t = text.trim();
    if t == "none" {
        return Ok(None);
    }
    let usage = "use e.g. \"50/s\", \"300/m\" or \"1000/h\" (or \"none\")";
    let Some((count, unit)) = t.split_once('/') else {
        return Err(format!("'{text}' is not a rate; {usage}"));
    };
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => {
            return Err(format!(
                "'{text}': '{other}' is not one of s, m, h; {usage}"
            ))
        }
    };
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{text}': '{count}' is not a whole number; {usage}"
        ));
    }
    match count.parse::<u32>() {
        Ok(0) => Err(format!(
            "'{text}': must allow at least 1 delivery (leave rate_limit out, or \"none\", for no limit)"
        )),
        Ok(count) if u64::from(count) > MAX_RATE_PER_SECOND * per.as_secs() => Err(format!(
            "'{text}': at most {MAX_RATE_PER_SECOND}/s (leave rate_limit out for no limit)"
        )),
        Ok(count) => Ok(Some(Rate { count, per })),
        Err(_) => Err(format!("'{text}': '{count}' is too large")),
    }
}

/// Above this a limit is no limit in practice (one delivery every microsecond).
const MAX_RATE_PER_SECOND: u64 = 1_000_000;
