//! Routes on runtime endpoints, the ones kept in the registry: create, read, change,
//! delete, and the event catalog a dashboard offers when a customer picks events.
//!
//! The operations are `registrar`'s, shared with `natshook endpoints`; this layer reads
//! requests and renders the outcome as JSON and status codes. A secret is returned
//! once, by the create that generated or received it (or the rotation that made it),
//! and by no other answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::{Map, Value};

use super::error::Problem;
use super::{AdminState, ApiError, ApiPath, ApiQuery, JsonBody};
use crate::config::is_endpoint_name;
use crate::http::RegistryState;
use crate::registrar::{Registrar, RegistrarError};
use crate::store::registry::{KeptRecord, Record, RegistryError};
use crate::worker::Worker;

/// Unknown keys are refused: a settings page that misspells `tenant` (`tenants`,
/// `tenant[0]` as some encoders write it) would otherwise list every tenant's
/// endpoints to one customer.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    tenant: Option<String>,
    /// At most this many endpoints, by name; the answer's `next` is the `after` of
    /// the next page while more follow.
    limit: Option<usize>,
    /// Only endpoints whose name sorts after this one.
    after: Option<String>,
}

/// The largest page `GET /api/endpoints?limit=` serves.
const MAX_PAGE: usize = 1_000;

impl AdminState {
    fn registrar(&self) -> Result<Registrar, ApiError> {
        if let Some(registrar) = self.app.registrar() {
            return Ok(registrar);
        }
        Err(match self.app.registry_state() {
            RegistryState::Off => ApiError::new(
                StatusCode::NOT_FOUND,
                "runtime endpoints are off ([registry] enabled = true turns them on)",
            ),
            _ => self.not_yet(),
        })
    }

    /// The registrar for an operation on the endpoint `name`; a file endpoint's name
    /// answers `409` whether or not the registry is open, since no answer of the
    /// registry could change it.
    fn registrar_for(&self, name: &str) -> Result<Registrar, ApiError> {
        if self.app.is_file_endpoint(name) {
            return Err(RegistrarError::FileEndpoint(name.to_string()).into());
        }
        self.registrar()
    }

    /// Whether what the API would say of the endpoint `name` (of every endpoint with
    /// `None`) may be incomplete: the process has not started its endpoints, or the
    /// registry is not open and read (which file endpoints do not wait for).
    pub(super) fn starting(&self, name: Option<&str>) -> bool {
        !self.app.started()
            || (self.app.registry_state() == RegistryState::Opening
                && name.is_none_or(|n| !self.app.is_file_endpoint(n)))
    }

    /// Removes what a deleted endpoint of `name` left before `name` is created again
    /// ([`Registrar::clear_former`]); a name this process still serves, knows as stored
    /// or removes answers `409` to try again.
    async fn clear_former(&self, registrar: &Registrar, name: &str) -> Result<(), ApiError> {
        let busy =
            || self.running(name).is_some() || self.app.removing(name) || self.is_record(name);
        Ok(registrar.clear_former(name, busy).await?)
    }

    fn running(&self, name: &str) -> Option<Arc<Worker>> {
        self.app.workers().get(name).cloned()
    }

    /// The answer about endpoints while the process has not started them (NATS not
    /// reached) or has not read the registry: they may well exist, so not `404`, and
    /// the list would lack them.
    pub(super) fn not_yet(&self) -> ApiError {
        let error = match self.app.started() {
            false => "natshook is starting: its endpoints run once NATS is reached",
            true => "the endpoint registry is not open or not read yet",
        };
        ApiError::unavailable(error).retry_after(1)
    }
}

/// The status and JSON an operation's failure answers with.
impl From<RegistrarError> for ApiError {
    fn from(e: RegistrarError) -> Self {
        match e {
            RegistrarError::FileEndpoint(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            RegistrarError::NotFound(name) => ApiError::not_found(&name),
            RegistrarError::Invalid { what, problems } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the {what} is invalid"),
            )
            .with_problems(
                problems
                    .into_iter()
                    .map(|p| Problem {
                        field: p.path,
                        message: p.message,
                    })
                    .collect(),
            ),
            RegistrarError::Registry(e @ RegistryError::Exists(_)) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            RegistrarError::Registry(e @ RegistryError::Stale(_)) => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, e.to_string())
            }
            RegistrarError::Registry(e @ RegistryError::Nats(_)) => ApiError::unavailable(e),
            RegistrarError::Contended => ApiError::unavailable(e).retry_after(1),
            RegistrarError::StillRemoving(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string()).retry_after(2)
            }
            RegistrarError::Leftovers { .. } => ApiError::unavailable(e).retry_after(1),
            RegistrarError::Randomness(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
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

/// A runtime endpoint as the API shows it: never its secret. One this process does
/// not serve (stored before a check it now fails, or shadowed by a file endpoint)
/// says why in `problems`, in the shape of a 422's.
fn api_view(s: &AdminState, record: &Record, worker: Option<Arc<Worker>>) -> Value {
    let mut extra = crate::registrar::view(record);
    if let Some(problems) = s.app.unserved(&record.name) {
        let problems: Vec<Value> = problems
            .into_iter()
            .map(|p| serde_json::json!({ "field": p.path, "message": p.message }))
            .collect();
        extra.insert("problems".into(), Value::Array(problems));
    }
    with_state(worker, extra)
}

/// A served endpoint as `GET` shows it, from what this process holds (no registry
/// read): the answer of an action on its worker, which has taken effect whether or
/// not NATS answers now.
pub(super) fn served_view(s: &AdminState, worker: Arc<Worker>) -> Value {
    let name = worker.endpoint().name.clone();
    if s.app.is_file_endpoint(&name) {
        return file_view(worker);
    }
    match s.app.record(&name) {
        Some(record) => api_view(s, &record.record(), Some(worker)),
        None => serde_json::to_value(worker.state()).unwrap_or_default(),
    }
}

fn file_view(worker: Arc<Worker>) -> Value {
    let mut extra = Map::new();
    extra.insert("source".into(), "file".into());
    extra.insert("enabled".into(), true.into());
    if let Some(tenant) = &worker.endpoint().tenant {
        extra.insert("tenant".into(), tenant.as_str().into());
    }
    with_state(Some(worker), extra)
}

pub(super) async fn list(
    State(s): State<AdminState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    // Before the start or the registry's records, the list would show a customer no
    // webhooks at all.
    if s.starting(None) {
        return Err(s.not_yet());
    }
    if let Some(limit) = query.limit.filter(|n| !(1..=MAX_PAGE).contains(n)) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "the query is invalid").with_problems(vec![
                Problem {
                    field: "limit".into(),
                    message: format!("must be from 1 to {MAX_PAGE} (got {limit})"),
                },
            ]),
        );
    }
    let running = s.app.workers();
    // The tenant and the page's start are applied before any view is built: a
    // settings page for one customer costs that customer's endpoints, not all.
    let wanted = |name: &str, tenant: Option<&str>| {
        query.tenant.as_deref().is_none_or(|t| tenant == Some(t))
            && query.after.as_deref().is_none_or(|after| name > after)
    };
    // Views are built for the page alone: a page of 100 out of 10,000 endpoints costs
    // 100 views, and paging through all of them costs each view once.
    enum Listed {
        Record(Arc<KeptRecord>, Option<Arc<Worker>>),
        File(Arc<Worker>),
    }
    let mut all: Vec<(String, Listed)> = Vec::new();
    for record in s.app.records() {
        if !wanted(&record.name, record.tenant()) {
            continue;
        }
        // A record with a file endpoint's name is not served: the worker is the file's.
        let worker = match s.app.is_file_endpoint(&record.name) {
            true => None,
            false => running.get(&record.name).cloned(),
        };
        all.push((record.name.clone(), Listed::Record(record, worker)));
    }
    all.extend(
        running
            .iter()
            .filter(|w| s.app.is_file_endpoint(&w.endpoint().name))
            .filter(|w| {
                let e = w.endpoint();
                wanted(&e.name, e.tenant.as_deref())
            })
            .map(|w| (w.endpoint().name.clone(), Listed::File(Arc::clone(w)))),
    );
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let next = match query.limit {
        Some(limit) if all.len() > limit => {
            all.truncate(limit);
            all.last().map(|(name, _)| name.clone())
        }
        _ => None,
    };
    let endpoints: Vec<Value> = all
        .into_iter()
        .map(|(_, listed)| match listed {
            Listed::Record(record, worker) => api_view(&s, &record.record(), worker),
            Listed::File(worker) => file_view(worker),
        })
        .collect();
    Ok(Json(match next {
        Some(next) => serde_json::json!({ "endpoints": endpoints, "next": next }),
        None => serde_json::json!({ "endpoints": endpoints }),
    }))
}

pub(super) async fn one(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if s.app.is_file_endpoint(&name) {
        if let Some(w) = s.running(&name) {
            return Ok(Json(file_view(w)));
        }
        if !s.app.started() {
            return Err(s.not_yet());
        }
    }
    let registrar = match s.registrar() {
        Ok(r) => r,
        Err(_) if s.app.registry_state() == RegistryState::Off => {
            return Err(ApiError::not_found(&name))
        }
        Err(e) => return Err(e),
    };
    let record = registrar.get(&name).await?;
    let worker = s.running(&name);
    let disabled = worker.is_none() && !record.enabled();
    let mut view = api_view(&s, &record, worker);
    // A customer who switched a webhook off sees what will come once it is on again
    // (the list leaves it out: a JetStream request per disabled endpoint).
    if disabled {
        if let (Some(pending), Value::Object(view)) = (s.app.waiting(&name).await, &mut view) {
            view.insert("pending".into(), pending.into());
        }
    }
    Ok(Json(view))
}

/// `view` with the secret the operation shows this once.
fn with_secret(mut view: Value, secret: Value) -> Value {
    if let Value::Object(v) = &mut view {
        v.insert("secret".into(), secret);
    }
    view
}

pub(super) async fn create(
    State(s): State<AdminState>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let name = body.get("name").and_then(Value::as_str).map(str::to_string);
    let registrar = match &name {
        Some(name) => s.registrar_for(name)?,
        None => s.registrar()?,
    };
    let mut _creating = None;
    if let Some(name) = name.as_deref().filter(|n| is_endpoint_name(n)) {
        _creating = Some(s.creating.mark_alone(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("an endpoint named '{name}' is being created"),
            )
            .retry_after(1)
        })?);
        s.clear_former(&registrar, name).await?;
    }
    let created = registrar.create(body).await?;
    let view = with_secret(api_view(&s, &created.record, None), created.secret);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The revision an `If-Match` header names (`5`, `"5"` or `W/"5"`); `*` names any
/// (RFC 9110: the endpoint as it is), as no header does.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    if v.to_str().is_ok_and(|t| t.trim() == "*") {
        return Ok(None);
    }
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

pub(super) async fn patch(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let registrar = s.registrar_for(&name)?;
    let record = registrar.update(&name, body, if_match(&headers)?).await?;
    Ok(Json(api_view(&s, &record, s.running(&name))))
}

pub(super) async fn delete(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let registrar = s.registrar_for(&name)?;
    registrar.delete(&name, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateRequest {
    grace: Option<String>,
}

pub(super) async fn rotate(
    State(s): State<AdminState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<RotateRequest>,
) -> Result<Json<Value>, ApiError> {
    let registrar = s.registrar_for(&name)?;
    let rotated = registrar
        .rotate(&name, request.grace.as_deref(), if_match(&headers)?)
        .await?;
    let view = api_view(&s, &rotated.record, s.running(&name));
    Ok(Json(with_secret(view, rotated.secret.into())))
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
