//! Routes on runtime endpoints, the ones kept in the registry: create, read, change,
//! delete, and the event catalog a dashboard offers when a customer picks events.
//!
//! A body is checked by the same code as a file `[[endpoints]]` entry before anything
//! is written; the registry's watch then starts, restarts or stops the worker in
//! every natshook process on the bucket. A secret is returned once, by the create
//! that generated or received it, and by no other answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use http::StatusCode;
use serde_json::{Map, Value};

use super::error::Problem;
use super::{AdminState, ApiError, ApiPath, ApiQuery, JsonBody};
use crate::signing::Scheme;
use crate::store::registry::{Record, Registry, RegistryError};
use crate::worker::Worker;

#[derive(Debug, serde::Deserialize)]
pub(super) struct ListQuery {
    tenant: Option<String>,
}

impl AdminState {
    fn registry(&self) -> Result<&Registry, ApiError> {
        self.app.registry().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "the endpoint registry is not available ([registry] enabled = true; it opens once NATS is reached)",
            )
        })
    }

    fn running(&self, name: &str) -> Option<Arc<Worker>> {
        self.app
            .workers()
            .into_iter()
            .find(|w| w.endpoint().name == name)
    }

    fn not_file(&self, name: &str) -> Result<(), ApiError> {
        if self.app.is_file_endpoint(name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("endpoint '{name}' is managed by the config file; change it there"),
            ));
        }
        Ok(())
    }

    fn check(&self, entry: &Map<String, Value>) -> Result<crate::config::Endpoint, ApiError> {
        self.app.check_endpoint(entry).map_err(invalid)
    }
}

fn invalid(problems: Vec<crate::config::Problem>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the endpoint is invalid").with_problems(
        problems
            .into_iter()
            .map(|p| Problem {
                field: p.path,
                message: p.message,
            })
            .collect(),
    )
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        RegistryError::Stale(_) => ApiError::new(StatusCode::PRECONDITION_FAILED, e.to_string()),
        RegistryError::Nats(_) => ApiError::unavailable(e),
    }
}

/// The worker's state (when it runs here) with `extra` over it.
fn with_state(worker: Option<Arc<Worker>>, extra: Map<String, Value>) -> Value {
    let mut out = match worker.map(|w| serde_json::to_value(w.state())) {
        Some(Ok(Value::Object(o))) => o,
        _ => Map::new(),
    };
    out.extend(extra);
    Value::Object(out)
}

/// A runtime endpoint as the API shows it: never its secret.
fn api_view(record: &Record, worker: Option<Arc<Worker>>) -> Value {
    let mut extra = record.value.clone();
    extra.remove("secret");
    extra.insert("source".into(), "api".into());
    extra.insert("enabled".into(), record.enabled().into());
    extra.insert("revision".into(), record.revision.into());
    with_state(worker, extra)
}

fn file_view(worker: Arc<Worker>) -> Value {
    let mut extra = Map::new();
    extra.insert("source".into(), "file".into());
    extra.insert("enabled".into(), true.into());
    with_state(Some(worker), extra)
}

pub(super) async fn list(
    State(s): State<AdminState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Json<Value> {
    let mut all: Vec<Value> = s
        .app
        .workers()
        .into_iter()
        .filter(|w| s.app.is_file_endpoint(&w.endpoint().name))
        .map(file_view)
        .collect();
    all.extend(
        s.app
            .records()
            .iter()
            .map(|r| api_view(r, s.running(&r.name))),
    );
    if let Some(t) = &query.tenant {
        all.retain(|e| e.get("tenant").and_then(Value::as_str) == Some(t));
    }
    Json(serde_json::json!({ "endpoints": all }))
}

pub(super) async fn one(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if s.app.is_file_endpoint(&name) {
        if let Some(w) = s.running(&name) {
            return Ok(Json(file_view(w)));
        }
    }
    let Ok(registry) = s.registry() else {
        return Err(ApiError::not_found(&name));
    };
    match registry.get(&name).await.map_err(registry_error)? {
        Some(r) => Ok(Json(api_view(&r, s.running(&name)))),
        None => Err(ApiError::not_found(&name)),
    }
}

/// A new secret: `whsec_` and 32 random bytes in base64 for Standard Webhooks, else
/// 32 random bytes as 64 hex characters.
fn new_secret(scheme: Scheme) -> Result<String, ApiError> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness for a secret: {e}"),
        )
    })?;
    Ok(match scheme {
        Scheme::Standard => format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
        _ => hex::encode(key),
    })
}

pub(super) async fn create(
    State(s): State<AdminState>,
    JsonBody(mut body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let registry = s.registry()?.clone();
    let name = body.get("name").and_then(Value::as_str).map(str::to_string);
    if let Some(name) = &name {
        s.not_file(name)?;
    }
    if !body.contains_key("secret") {
        // The scheme decides the secret's form: check with a stand-in first.
        let mut probe = body.clone();
        probe.insert("secret".into(), "stand-in".into());
        let scheme = s.check(&probe)?.signer.scheme();
        body.insert("secret".into(), new_secret(scheme)?.into());
    }
    s.check(&body)?;
    let name = name.unwrap_or_default();
    body.entry("enabled").or_insert(true.into());
    let revision = registry
        .create(&name, &body)
        .await
        .map_err(registry_error)?;
    let record = Record {
        name,
        revision,
        value: body,
    };
    let mut view = api_view(&record, None);
    if let (Value::Object(v), Some(secret)) = (&mut view, record.value.get("secret")) {
        v.insert("secret".into(), secret.clone());
    }
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The revision an `If-Match` header names (`5`, `"5"` or `W/"5"`).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|t| t.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "If-Match must be the endpoint's revision (a number)",
            )
        })
}

/// The stored record and the revision a write must replace.
async fn current(
    s: &AdminState,
    name: &str,
    headers: &HeaderMap,
) -> Result<(Registry, Record, u64), ApiError> {
    let registry = s.registry()?.clone();
    s.not_file(name)?;
    let record = registry
        .get(name)
        .await
        .map_err(registry_error)?
        .ok_or_else(|| ApiError::not_found(name))?;
    let expected = if_match(headers)?.unwrap_or(record.revision);
    if expected != record.revision {
        return Err(registry_error(RegistryError::Stale(expected)));
    }
    Ok((registry, record, expected))
}

pub(super) async fn patch(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let (registry, mut record, expected) = current(&s, &name, &headers).await?;
    let mut problems = Vec::new();
    for (key, value) in body {
        match (key.as_str(), value) {
            ("name", Value::String(n)) if n == name => {}
            ("name", _) => problems.push(Problem {
                field: "name".into(),
                message: "cannot be changed (create a new endpoint instead)".into(),
            }),
            ("skip_backlog", Value::Bool(false)) => {}
            ("skip_backlog", _) => problems.push(Problem {
                field: "skip_backlog".into(),
                message: "not supported yet: a re-enabled endpoint delivers its backlog".into(),
            }),
            (_, Value::Null) => {
                record.value.remove(&key);
            }
            (_, v) => {
                record.value.insert(key, v);
            }
        }
    }
    if !problems.is_empty() {
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the change is invalid")
                .with_problems(problems),
        );
    }
    s.check(&record.value)?;
    record.revision = registry
        .update(&name, &record.value, expected)
        .await
        .map_err(registry_error)?;
    Ok(Json(api_view(&record, s.running(&name))))
}

pub(super) async fn delete(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (registry, _, expected) = current(&s, &name, &headers).await?;
    registry
        .delete(&name, expected)
        .await
        .map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateRequest {
    grace: Option<String>,
}

/// How long the old secret keeps signing after a rotation by default: receivers
/// usually take a day to roll out a new secret.
const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A new secret, first in the list; the one it replaces signs too until the grace
/// ends (with `standard`, which signs with every secret; `hex` and `sha256` sign with
/// the newest only).
pub(super) async fn rotate(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<RotateRequest>,
) -> Result<Json<Value>, ApiError> {
    let (registry, mut record, expected) = current(&s, &name, &headers).await?;
    let grace = match request.grace.as_deref() {
        None => DEFAULT_GRACE,
        Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the rotation is invalid")
                .with_problems(vec![Problem {
                    field: "grace".into(),
                    message: format!("'{t}' is not a duration such as \"24h\": {e}"),
                }])
        })?,
    };
    let scheme = s.check(&record.value)?.signer.scheme();
    let secret = new_secret(scheme)?;
    let previous = match record.value.get("secret") {
        Some(Value::String(old)) => Some(old.clone()),
        Some(Value::Array(list)) => list.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let now = std::time::SystemTime::now();
    let until = now + grace;
    match previous {
        Some(old) if !grace.is_zero() => {
            record
                .value
                .insert("secret".into(), serde_json::json!([secret, old]));
            record.value.insert(
                crate::config::api::GRACE_KEY.into(),
                crate::time::rfc3339_millis(until).into(),
            );
        }
        _ => {
            record.value.insert("secret".into(), secret.clone().into());
            record.value.remove(crate::config::api::GRACE_KEY);
        }
    }
    s.check(&record.value)?;
    record.revision = registry
        .update(&name, &record.value, expected)
        .await
        .map_err(registry_error)?;
    let mut view = api_view(&record, s.running(&name));
    if let Value::Object(v) = &mut view {
        v.insert("secret".into(), secret.into());
    }
    Ok(Json(view))
}

/// The event names the mappings produce, a `{n}` token shown as `*`, in mapping order.
pub(super) async fn events(State(s): State<AdminState>) -> Json<Value> {
    let router = s.app.router();
    let mut names: Vec<String> = Vec::new();
    for rule in router.rules() {
        let shown: Vec<&str> = rule
            .event
            .as_str()
            .split('.')
            .map(|t| if t.contains('{') { "*" } else { t })
            .collect();
        let shown = shown.join(".");
        if !names.contains(&shown) {
            names.push(shown);
        }
    }
    Json(serde_json::json!({ "events": names }))
}
