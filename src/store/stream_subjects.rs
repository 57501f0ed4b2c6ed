//! Adding subjects to a stream natshook was allowed to create (`create_stream =
//! true`): the ingress routes' subjects and the event mappings' both land on
//! `nats.stream` this way, so a config that grows keeps a development stream in step.

use async_nats::jetstream;

use crate::routing::Pattern;

/// Adds `missing` to `stream`'s subjects, replacing any subject one of them covers
/// (JetStream refuses overlapping subjects within a stream). The error says why, for
/// the caller to name the subjects.
pub async fn add(js: &jetstream::Context, stream: &str, missing: &[Pattern]) -> Result<(), String> {
    // One read-change-write at a time: on a reload the ingress routes' subjects and
    // the mappings' are added by two tasks, and the later write would drop what the
    // earlier one added.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let mut cfg = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .config
        .clone();
    for p in missing {
        cfg.subjects
            .retain(|s| !Pattern::parse(s).is_ok_and(|s| s.is_subset_of(p)));
        if !missing.iter().any(|q| q != p && p.is_subset_of(q)) {
            cfg.subjects.push(p.to_string());
        }
    }
    js.update_stream(cfg)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `patterns` as one line for logs and errors.
pub fn joined(patterns: &[Pattern]) -> String {
    patterns
        .iter()
        .map(Pattern::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
