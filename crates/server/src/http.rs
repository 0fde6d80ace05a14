//! The HTTP face of the FHIR interactions: routing, content negotiation, authentication,
//! base URLs and paging links. Each request makes one hop to a blocking thread, where it
//! is authenticated, authorized and served against the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use medvault_base::limits::{
    PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, REQUEST_BODY_BYTES_MAX, REQUEST_URL_BYTES_MAX, RESOURCE_BYTES_MAX,
};
use medvault_fhir::outcome::operation_outcome;
use medvault_store::engine::HistoryPage;
use medvault_store::{History, StoredVersion, Written};

use crate::auth::{authorize_clinical, ClinicalAccess, RequestInfo};
use crate::bundle::{
    etag, parse_etag, raw_resource, BundleLink, EntryRequest, EntryResponse, ResponseBundle, ResponseEntry,
    ReturnPreference,
};
use crate::error::ApiError;
use crate::login::{AuthConfig, Authenticator};
use crate::service::Service;
use medvault_audit::EventKind;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// How the server is reached, for absolute URLs in responses.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `https` when serving TLS.
    pub scheme: &'static str,
    /// Used when a request has no usable `Host` header, e.g. `127.0.0.1:8080`.
    pub fallback_authority: String,
    /// A fixed public base URL (behind a proxy), overriding `Host`.
    pub public_base: Option<String>,
}

#[derive(Debug)]
pub struct AppState {
    pub service: Service,
    pub config: HttpConfig,
    pub auth: Authenticator,
    pub auditor: Arc<crate::audit::Auditor>,
    /// Argon2id checks allowed at once (`crate::admin::PASSWORD_CHECKS_CONCURRENT`).
    pub password_slots: Arc<tokio::sync::Semaphore>,
    /// Benchmark only: every request is served without session checks or authorization.
    danger_skip_authorization: bool,
    request_counter: AtomicU64,
    request_prefix: String,
}

impl AppState {
    pub fn new(service: Service, config: HttpConfig) -> Arc<Self> {
        Self::with_auth(service, config, AuthConfig::default())
    }

    pub fn with_auth(service: Service, config: HttpConfig, auth: AuthConfig) -> Arc<Self> {
        Arc::new(Self::build(service, config, auth, false))
    }

    /// A server whose alerts also go to a syslog receiver (RFC 5424 over UDP or TLS:
    /// `alert_sink.rs`), and that goes into read-only lockdown on mass modification if
    /// `lockdown` is set.
    pub fn with_alerts(
        service: Service,
        config: HttpConfig,
        sink: Option<crate::alert_sink::AlertSink>,
        lockdown: bool,
    ) -> Arc<Self> {
        let mut auditor = crate::audit::Auditor::new(service.store().clone());
        if let Some(sink) = sink {
            auditor = auditor.with_syslog(sink);
        }
        if lockdown {
            auditor = auditor.with_lockdown();
        }
        Arc::new(Self::build_with(service, config, AuthConfig::default(), false, Arc::new(auditor)))
    }

    /// A server that skips session checks and authorization, or auditing, or both, so a
    /// benchmark can measure what they cost. Never reachable from `medvault serve`.
    #[cfg(feature = "danger-benchmark-unchecked")]
    pub fn danger_for_benchmark(
        service: Service,
        config: HttpConfig,
        skip_authorization: bool,
        skip_audit: bool,
    ) -> Arc<Self> {
        tracing::warn!(skip_authorization, skip_audit, "serving with checks switched off: benchmark only");
        let auditor = if skip_audit {
            crate::audit::Auditor::danger_disabled_for_benchmark(service.store().clone())
        } else {
            crate::audit::Auditor::new(service.store().clone())
        };
        Arc::new(Self::build_with(service, config, AuthConfig::default(), skip_authorization, Arc::new(auditor)))
    }

    fn build(service: Service, config: HttpConfig, auth: AuthConfig, danger_skip_authorization: bool) -> Self {
        let auditor = Arc::new(crate::audit::Auditor::new(service.store().clone()));
        Self::build_with(service, config, auth, danger_skip_authorization, auditor)
    }

    fn build_with(
        service: Service,
        config: HttpConfig,
        auth: AuthConfig,
        danger_skip_authorization: bool,
        auditor: Arc<crate::audit::Auditor>,
    ) -> Self {
        let prefix = medvault_crypto::random::array::<4>().map(|b| medvault_base::hex::encode(&b)).unwrap_or_default();
        let auth = Authenticator::new(service.store().clone(), auth, auditor.clone());
        Self {
            service,
            config,
            auth,
            auditor,
            password_slots: Arc::new(tokio::sync::Semaphore::new(crate::admin::PASSWORD_CHECKS_CONCURRENT)),
            danger_skip_authorization,
            request_counter: AtomicU64::new(0),
            request_prefix: prefix,
        }
    }

    /// How this server names itself in audit events.
    pub fn identity(&self) -> medvault_audit::ServerIdentity {
        medvault_audit::ServerIdentity {
            name: format!("medvault@{}", self.config.public_base.as_deref().unwrap_or(&self.config.fallback_authority)),
            site: None,
        }
    }

    pub fn next_request_id(&self) -> String {
        format!("{}-{}", self.request_prefix, self.request_counter.fetch_add(1, Ordering::Relaxed))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/fhir/metadata", get(metadata))
        .route("/fhir", axum::routing::post(bundle))
        .route("/fhir/", axum::routing::post(bundle))
        .route("/fhir/_history", get(history_system))
        .route(
            "/fhir/{resource_type}",
            axum::routing::post(create).get(search_type).put(conditional_update).delete(conditional_delete),
        )
        .route("/fhir/{resource_type}/_search", axum::routing::post(search_post))
        .route("/fhir/{resource_type}/_history", get(history_type))
        .route("/fhir/Patient/{id}/$everything", get(everything))
        .route("/fhir/{resource_type}/{id}", get(read).put(update).delete(delete))
        .route("/fhir/{resource_type}/{id}/_history", get(history_instance))
        .route("/fhir/{resource_type}/{id}/_history/{version}", get(vread))
        .route("/ledger/checkpoint", get(ledger_checkpoint))
        .route("/ledger/key", get(ledger_key))
        .route("/ledger/inclusion", get(ledger_inclusion))
        .route("/ledger/consistency", get(ledger_consistency))
        .merge(crate::admin::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// What every handler knows about its request.
struct Context {
    request_id: String,
    base: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    /// The client's address, for audit records.
    address: Option<String>,
}

async fn health() -> Response {
    let mut response = Response::new(Body::from(r#"{"status":"pass"}"#));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/health+json"));
    response
}

async fn metadata(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let context = match context(&state, &headers, query.as_deref()) {
        Ok(context) => context,
        Err((id, error)) => return error_response(&id, error),
    };
    let now_ms = state.service.store().clock().now_ms();
    let statement = crate::capability::capability_statement(&context.base, now_ms);
    match serde_json::to_vec(&statement) {
        Ok(bytes) => fhir_response(StatusCode::OK, bytes, &context.request_id),
        Err(e) => error_response(&context.request_id, ApiError::internal(e.to_string())),
    }
}

async fn not_found(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = state.next_request_id();
    error_response(&id, ApiError::not_found(format!("no such endpoint: {}", request.uri().path())))
}

async fn method_not_allowed(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let id = state.next_request_id();
    error_response(
        &id,
        ApiError::new(
            405,
            "not-supported",
            format!("{} is not supported on {}", request.method(), request.uri().path()),
        ),
    )
}

async fn search_type(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    request: Request,
) -> Response {
    if resource_type == "AuditEvent" {
        return audit_search(state, request).await;
    }
    run(state, request, None, EventKind::SearchType, move |service, context, access, _body| {
        search_response(service, context, access, &resource_type)
    })
    .await
}

/// `POST /fhir/{type}/_search` with the parameters as a form.
async fn search_post(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    request: Request,
) -> Response {
    if resource_type == "AuditEvent" {
        return error_response(
            &state.next_request_id(),
            ApiError::new(405, "not-supported", "search AuditEvents with GET /fhir/AuditEvent"),
        );
    }
    run_form(state, request, EventKind::SearchType, move |service, context, access, _body| {
        search_response(service, context, access, &resource_type)
    })
    .await
}

fn search_response(
    service: &Service,
    context: &Context,
    access: &ClinicalAccess,
    resource_type: &str,
) -> Result<Response, ApiError> {
    let request = crate::search::SearchRequest {
        base: &context.base,
        resource_type,
        pairs: &context.query,
        handling: handling(&context.headers),
    };
    let json = service.search(access, &request)?;
    Ok(fhir_response(StatusCode::OK, json, &context.request_id))
}

/// `GET /fhir/Patient/{id}/$everything`.
async fn everything(State(state): State<Arc<AppState>>, Path(id): Path<String>, request: Request) -> Response {
    run(state, request, None, EventKind::SearchType, move |service, context, access, _body| {
        let json = service.everything(access, &context.base, &id, &context.query, handling(&context.headers))?;
        Ok(fhir_response(StatusCode::OK, json, &context.request_id))
    })
    .await
}

/// `Prefer: handling=strict|lenient` (lenient when absent, as R4 servers default).
fn handling(headers: &HeaderMap) -> medvault_fhir::search::Handling {
    if prefer_values(headers).any(|value| value == "handling=strict") {
        medvault_fhir::search::Handling::Strict
    } else {
        medvault_fhir::search::Handling::Lenient
    }
}

/// Criteria of a conditional interaction: the URL's query without response parameters.
fn criteria_of(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).into_owned().filter(|(name, _)| name != "_format").collect()
}

/// `PUT /fhir/{type}?criteria`: updates the one match, creates when none matches, 412 when
/// several do.
async fn conditional_update(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    request: Request,
) -> Response {
    if resource_type == "AuditEvent" {
        return audit_is_read_only(&state);
    }
    run(state, request, Some(RESOURCE_BYTES_MAX), EventKind::Update, move |service, context, access, body| {
        let criteria: Vec<(String, String)> =
            context.query.iter().filter(|(name, _)| name != "_format").cloned().collect();
        let mut resource = crate::json::parse_body(&body, RESOURCE_BYTES_MAX)?;
        let if_match = if_match(&context.headers)?;
        let _serial = service.conditional.lock().map_err(|_| ApiError::internal("poisoned"))?;
        let found = service.conditional_matches(access, &resource_type, &criteria)?;
        let body_id = resource.get("id").and_then(serde_json::Value::as_str).map(str::to_string);
        let written = match (found.as_slice(), body_id) {
            ([], Some(id)) => service.update(access, &resource_type, &id, resource, if_match)?,
            ([], None) => service.create(access, &resource_type, resource)?,
            ([one], body_id) => {
                if body_id.as_ref().is_some_and(|id| *id != one.id) {
                    return Err(ApiError::bad_request(
                        "the body's id differs from the id of the resource the criteria match",
                    ));
                }
                resource["id"] = serde_json::Value::String(one.id.clone());
                service.update(access, &resource_type, &one.id, resource, if_match)?
            }
            _ => return Err(several_match()),
        };
        let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(written_response(status, &written, context))
    })
    .await
}

/// `DELETE /fhir/{type}?criteria`: deletes the one match (204 also when none matches), 412
/// when several do.
async fn conditional_delete(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    request: Request,
) -> Response {
    if resource_type == "AuditEvent" {
        return audit_is_read_only(&state);
    }
    run(state, request, None, EventKind::Delete, move |service, context, access, _body| {
        let criteria: Vec<(String, String)> =
            context.query.iter().filter(|(name, _)| name != "_format").cloned().collect();
        let _serial = service.conditional.lock().map_err(|_| ApiError::internal("poisoned"))?;
        let found = service.conditional_matches(access, &resource_type, &criteria)?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        match found.as_slice() {
            [] => {}
            [one] => {
                let written = service.delete(access, &resource_type, &one.id, if_match(&context.headers)?)?;
                insert_header(&mut response, header::ETAG, &etag(written.version));
                insert_receipt(&mut response, &written);
            }
            _ => return Err(several_match()),
        }
        insert_header(&mut response, "x-request-id", &context.request_id);
        Ok(response)
    })
    .await
}

fn several_match() -> ApiError {
    ApiError::new(412, "multiple-matches", "the criteria match more than one resource; make them more selective")
}

async fn read(
    State(state): State<Arc<AppState>>,
    Path((resource_type, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    if resource_type == "AuditEvent" {
        return audit_read(state, request, id).await;
    }
    run_read(state, request, EventKind::Read, move |service, context, access, _| {
        let stored = service.read(access, &resource_type, &id)?;
        Ok(resource_response(
            StatusCode::OK,
            &stored.json,
            stored.version,
            stored.recorded_ms,
            None,
            &context.request_id,
        ))
    })
    .await
}

async fn vread(
    State(state): State<Arc<AppState>>,
    Path((resource_type, id, version)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    run_read(state, request, EventKind::Vread, move |service, context, access, _| {
        let stored = service.vread(access, &resource_type, &id, &version)?;
        Ok(resource_response(
            StatusCode::OK,
            &stored.json,
            stored.version,
            stored.recorded_ms,
            None,
            &context.request_id,
        ))
    })
    .await
}

async fn create(State(state): State<Arc<AppState>>, Path(resource_type): Path<String>, request: Request) -> Response {
    if resource_type == "AuditEvent" {
        return audit_is_read_only(&state);
    }
    run(state, request, Some(RESOURCE_BYTES_MAX), EventKind::Create, move |service, context, access, body| {
        let resource = crate::json::parse_body(&body, RESOURCE_BYTES_MAX)?;
        let Some(criteria) = context.headers.get("if-none-exist") else {
            let written = service.create(access, &resource_type, resource)?;
            return Ok(written_response(StatusCode::CREATED, &written, context));
        };
        // Conditional create: nothing is written if the criteria already match.
        let criteria = criteria.to_str().map_err(|_| ApiError::bad_request("If-None-Exist is not text"))?;
        let criteria = criteria_of(criteria.split_once('?').map_or(criteria, |(_, query)| query));
        let _serial = service.conditional.lock().map_err(|_| ApiError::internal("poisoned"))?;
        match service.conditional_matches(access, &resource_type, &criteria)?.as_slice() {
            [] => {
                let written = service.create(access, &resource_type, resource)?;
                Ok(written_response(StatusCode::CREATED, &written, context))
            }
            [existing] => {
                access.set_kind(EventKind::Read);
                let location = format!(
                    "{}/{}/{}/_history/{}",
                    context.base, existing.resource_type, existing.id, existing.version
                );
                Ok(resource_response(
                    StatusCode::OK,
                    &existing.json,
                    existing.version,
                    existing.recorded_ms,
                    Some(&location),
                    &context.request_id,
                ))
            }
            _ => Err(several_match()),
        }
    })
    .await
}

async fn update(
    State(state): State<Arc<AppState>>,
    Path((resource_type, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    if resource_type == "AuditEvent" {
        return audit_is_read_only(&state);
    }
    run(state, request, Some(RESOURCE_BYTES_MAX), EventKind::Update, move |service, context, access, body| {
        let if_match = if_match(&context.headers)?;
        let resource = crate::json::parse_body(&body, RESOURCE_BYTES_MAX)?;
        let written = service.update(access, &resource_type, &id, resource, if_match)?;
        let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(written_response(status, &written, context))
    })
    .await
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path((resource_type, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    if resource_type == "AuditEvent" {
        return audit_is_read_only(&state);
    }
    run(state, request, None, EventKind::Delete, move |service, context, access, _| {
        let if_match = if_match(&context.headers)?;
        let written = service.delete(access, &resource_type, &id, if_match)?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        if !written.noop {
            insert_header(&mut response, header::ETAG, &etag(written.version));
        }
        insert_receipt(&mut response, &written);
        insert_header(&mut response, "x-request-id", &context.request_id);
        Ok(response)
    })
    .await
}

/// AuditEvents are written by the server alone: a client cannot forge, change or remove one.
fn audit_is_read_only(state: &AppState) -> Response {
    error_response(
        &state.next_request_id(),
        ApiError::new(405, "not-supported", "AuditEvents are written by the server alone; they can only be read"),
    )
}

async fn audit_search(state: Arc<AppState>, request: Request) -> Response {
    let relative =
        request.uri().path_and_query().map(|p| p.as_str().trim_start_matches("/fhir/").to_string()).unwrap_or_default();
    let task_state = state.clone();
    run_authenticated(state, request, move |service, context, principal| {
        let query = crate::audit_search::AuditQuery::parse(&context.query, prefer_lenient(&context.headers))?;
        crate::audit_search::authorize(principal, &query)?;
        let now_ms = service.store().clock().now_ms();
        let record = crate::audit_search::search_record(principal, &query, &relative, &context.request_id, now_ms);
        task_state.auditor.commit_blocking(vec![record])?;
        let (page, next) = crate::audit_search::search(service.store(), &query)?;
        let kept: Vec<String> = context
            .query
            .iter()
            .filter(|(name, _)| name != "_cursor")
            .map(|(name, value)| form_urlencoded::Serializer::new(String::new()).append_pair(name, value).finish())
            .collect();
        let first = format!("{}/AuditEvent?{}", context.base, kept.join("&"));
        let next = next.map(|c| format!("{first}&_cursor={}-{}-{}", c.recorded_ms, c.block, c.slot));
        let bundle = crate::audit_search::bundle(&context.base, &first, &page, next, &task_state.identity(), now_ms);
        Ok(fhir_response(StatusCode::OK, serde_json::to_vec(&bundle).unwrap_or_default(), &context.request_id))
    })
    .await
}

async fn audit_read(state: Arc<AppState>, request: Request, id: String) -> Response {
    let task_state = state.clone();
    run_authenticated(state, request, move |service, context, principal| {
        let (block, slot) = id
            .split_once('-')
            .and_then(|(b, s)| Some((b.parse::<u64>().ok()?, s.parse::<u32>().ok()?)))
            .ok_or_else(|| ApiError::not_found(format!("AuditEvent/{id} does not exist")))?;
        let slot = medvault_store::engine::AuditSlot { recorded_ms: 0, block, slot };
        let stored = service
            .store()
            .audit_records_at(&[slot])
            .map_err(|_| ApiError::not_found(format!("AuditEvent/{id} does not exist")))?;
        let record = medvault_audit::decode(&stored[0].record)
            .map_err(|e| ApiError::internal(format!("an audit record does not decode: {e}")))?;
        let query = crate::audit_search::AuditQuery { patient: record.patients.first().cloned(), ..Default::default() };
        let allowed = principal.role == crate::auth::Role::Auditor
            || (principal.role == crate::auth::Role::Patient
                && crate::audit_search::authorize(principal, &query).is_ok());
        if !allowed {
            return Err(crate::auth::denied());
        }
        let now_ms = service.store().clock().now_ms();
        let mut audit = crate::audit_search::search_record(
            principal,
            &query,
            &format!("AuditEvent/{id}"),
            &context.request_id,
            now_ms,
        );
        audit.kind = EventKind::Read;
        task_state.auditor.commit_blocking(vec![audit])?;
        let event = medvault_audit::to_audit_event(&record, &id, &task_state.identity());
        Ok(fhir_response(StatusCode::OK, serde_json::to_vec(&event).unwrap_or_default(), &context.request_id))
    })
    .await
}

async fn bundle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(state, request, Some(REQUEST_BODY_BYTES_MAX), EventKind::Transaction, move |service, context, access, body| {
        let bundle = crate::json::parse_body(&body, REQUEST_BODY_BYTES_MAX)?;
        let json = service.process_bundle(access, bundle, &context.base, return_preference(&context.headers))?;
        Ok(fhir_response(StatusCode::OK, json, &context.request_id))
    })
    .await
}

async fn history_system(State(state): State<Arc<AppState>>, request: Request) -> Response {
    history(state, request, History::System, "_history".into()).await
}

async fn history_type(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    request: Request,
) -> Response {
    let path = format!("{resource_type}/_history");
    history(state, request, History::Type(resource_type), path).await
}

async fn history_instance(
    State(state): State<Arc<AppState>>,
    Path((resource_type, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let path = format!("{resource_type}/{id}/_history");
    history(state, request, History::Instance { resource_type, id }, path).await
}

async fn history(state: Arc<AppState>, request: Request, scope: History, path: String) -> Response {
    let kind = match &scope {
        History::System => EventKind::HistorySystem,
        History::Type(_) => EventKind::HistoryType,
        History::Instance { .. } => EventKind::HistoryInstance,
    };
    run(state, request, None, kind, move |service, context, access, _| {
        let page = history_page(context)?;
        let result = service.history(access, &scope, page)?;
        let json = history_bundle(service, context, &path, page, &result)?;
        Ok(fhir_response(StatusCode::OK, json, &context.request_id))
    })
    .await
}

fn history_page(context: &Context) -> Result<HistoryPage, ApiError> {
    let lenient = prefer_lenient(&context.headers);
    let mut page = HistoryPage { count: PAGE_SIZE_DEFAULT, before_seq: None, since_ms: None };
    for (name, value) in &context.query {
        match name.as_str() {
            "_count" => {
                let count: u32 =
                    value.parse().map_err(|_| ApiError::bad_request(format!("_count '{value}' is not a number")))?;
                if count == 0 || count > PAGE_SIZE_MAX {
                    return Err(ApiError::bad_request(format!("_count must be between 1 and {PAGE_SIZE_MAX}")));
                }
                page.count = count;
            }
            "_since" => {
                page.since_ms = Some(medvault_base::time::parse_instant(value).ok_or_else(|| {
                    ApiError::bad_request(format!("_since '{value}' is not an instant such as 2026-01-31T12:00:00Z"))
                })?)
            }
            "_cursor" => {
                page.before_seq =
                    Some(value.parse().map_err(|_| ApiError::bad_request("_cursor is not one this server issued"))?)
            }
            "_format" => {}
            _ if lenient => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "history does not support the parameter '{other}' (supported: _count, _since)"
                )))
            }
        }
    }
    Ok(page)
}

fn history_bundle(
    service: &Service,
    context: &Context,
    path: &str,
    page: HistoryPage,
    result: &crate::service::HistoryResult,
) -> Result<Vec<u8>, ApiError> {
    let versions: &[StoredVersion] = &result.versions;
    let mut bundle = ResponseBundle::new("history", service.store().clock().now_ms())?;
    let since =
        page.since_ms.map(|ms| format!("&_since={}", medvault_base::time::format_instant(ms))).unwrap_or_default();
    let first = format!("{}/{path}?_count={}{since}", context.base, page.count);
    let this = match page.before_seq {
        Some(seq) => format!("{first}&_cursor={seq}"),
        None => first.clone(),
    };
    bundle.link.push(BundleLink { relation: "self", url: this });
    bundle.link.push(BundleLink { relation: "first", url: first.clone() });
    if let Some(next) = result.next_before {
        bundle.link.push(BundleLink { relation: "next", url: format!("{first}&_cursor={next}") });
    }
    for stored in versions {
        let url = format!("{}/{}", stored.resource_type, stored.id);
        let (method, status) = match (stored.deleted, stored.version) {
            (true, _) => ("DELETE", "204 No Content"),
            (false, 1) => ("POST", "201 Created"),
            (false, _) => ("PUT", "200 OK"),
        };
        bundle.entry.push(ResponseEntry {
            full_url: Some(format!("{}/{url}", context.base)),
            resource: if stored.deleted { None } else { Some(raw_resource(&stored.json)?) },
            request: Some(EntryRequest {
                method,
                url: if method == "POST" { stored.resource_type.clone() } else { url },
            }),
            response: Some(EntryResponse {
                status: status.into(),
                etag: Some(etag(stored.version)),
                last_modified: Some(medvault_base::time::format_instant(stored.recorded_ms)),
                ..Default::default()
            }),
        });
    }
    bundle.to_json()
}

async fn ledger_checkpoint(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run_authenticated(state, request, |service, context, principal| {
        let size = query_u64(context, "tree_size")?;
        let note = crate::ledger::checkpoint(service.store(), principal, size)?;
        Ok(text_response(note, &context.request_id))
    })
    .await
}

async fn ledger_key(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run_authenticated(state, request, |service, context, principal| {
        let key = crate::ledger::verifier_key(service.store(), principal)?;
        Ok(text_response(format!("{key}\n"), &context.request_id))
    })
    .await
}

async fn ledger_inclusion(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(state, request, None, EventKind::Read, |service, context, access, _| {
        let resource = query_text(context, "resource")
            .ok_or_else(|| ApiError::bad_request("give resource=Type/id/_history/version"))?;
        let proof = crate::ledger::inclusion(service.store(), access, &resource, query_u64(context, "tree_size")?)?;
        Ok(json_response(&proof, &context.request_id))
    })
    .await
}

async fn ledger_consistency(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run_authenticated(state, request, |service, context, principal| {
        let old = query_u64(context, "old")?.ok_or_else(|| ApiError::bad_request("give old=<tree size>"))?;
        let proof = crate::ledger::consistency(service.store(), principal, old, query_u64(context, "new")?)?;
        Ok(json_response(&proof, &context.request_id))
    })
    .await
}

fn query_text(context: &Context, name: &str) -> Option<String> {
    context.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

fn query_u64(context: &Context, name: &str) -> Result<Option<u64>, ApiError> {
    query_text(context, name)
        .map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer"))))
        .transpose()
}

fn text_response(text: String, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    insert_header(&mut response, "x-request-id", request_id);
    response
}

fn json_response(value: &serde_json::Value, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert_header(&mut response, "x-request-id", request_id);
    response
}

/// Runs a request that needs an authenticated caller of any role (no clinical data).
async fn run_authenticated<F>(state: Arc<AppState>, request: Request, operation: F) -> Response
where
    F: FnOnce(&Service, &Context, &crate::auth::Principal) -> Result<Response, ApiError> + Send + 'static,
{
    let (parts, _body) = request.into_parts();
    let context = match context(&state, &parts.headers, parts.uri.query()) {
        Ok(context) => context,
        Err((id, error)) => return error_response(&id, error),
    };
    let task_state = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let authorization = context.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let result = task_state
            .auth
            .authenticate(authorization)
            .and_then(|principal| operation(&task_state.service, &context, &principal));
        (context.request_id, result)
    })
    .await;
    finish(&state, outcome)
}

/// Runs an authenticated clinical interaction on a blocking thread.
async fn run<F>(
    state: Arc<AppState>,
    request: Request,
    body_bytes_max: Option<usize>,
    kind: EventKind,
    operation: F,
) -> Response
where
    F: FnOnce(&Service, &Context, &ClinicalAccess, Vec<u8>) -> Result<Response, ApiError> + Send + 'static,
{
    run_with(state, request, body_bytes_max, BodyKind::Fhir, false, kind, operation).await
}

/// Runs a search posted as a form (`POST /fhir/{type}/_search`): the body's parameters
/// follow the URL's in `Context::query`.
async fn run_form<F>(state: Arc<AppState>, request: Request, kind: EventKind, operation: F) -> Response
where
    F: FnOnce(&Service, &Context, &ClinicalAccess, Vec<u8>) -> Result<Response, ApiError> + Send + 'static,
{
    run_with(state, request, Some(REQUEST_URL_BYTES_MAX), BodyKind::Form, false, kind, operation).await
}

/// Runs a single-resource read (read, vread) on the async worker itself.
async fn run_read<F>(state: Arc<AppState>, request: Request, kind: EventKind, operation: F) -> Response
where
    F: FnOnce(&Service, &Context, &ClinicalAccess, Vec<u8>) -> Result<Response, ApiError> + Send + 'static,
{
    run_with(state, request, None, BodyKind::Fhir, true, kind, operation).await
}

/// What a request body must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// A FHIR resource or Bundle in JSON.
    Fhir,
    /// `application/x-www-form-urlencoded` search parameters.
    Form,
}

async fn run_with<F>(
    state: Arc<AppState>,
    request: Request,
    body_bytes_max: Option<usize>,
    body_kind: BodyKind,
    inline_read: bool,
    kind: EventKind,
    operation: F,
) -> Response
where
    F: FnOnce(&Service, &Context, &ClinicalAccess, Vec<u8>) -> Result<Response, ApiError> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    let mut context = match context(&state, &parts.headers, parts.uri.query()) {
        Ok(context) => context,
        Err((id, error)) => return error_response(&id, error),
    };
    context.address = parts.extensions.get::<crate::admin::PeerAddr>().map(|peer| peer.0.ip().to_string());
    // Searches and history keep their query in the audit record.
    let query = match kind {
        EventKind::SearchType
        | EventKind::SearchSystem
        | EventKind::HistoryInstance
        | EventKind::HistoryType
        | EventKind::HistorySystem => {
            Some(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("").trim_start_matches("/fhir/").to_string())
        }
        _ => None,
    };
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    // Requests with a body are authenticated before the body is read, so an anonymous
    // client cannot make the server buffer it; the others do it all in one blocking hop.
    let (mut context, early_access) = match body_bytes_max {
        None => (context, None),
        Some(_) => {
            let task_state = state.clone();
            let (method, path) = (method.clone(), path.clone());
            let checked = tokio::task::spawn_blocking(move || {
                let result = authorize(&task_state, &context, &method, &path);
                (context, result)
            })
            .await;
            match checked {
                Ok((context, Ok(access))) => (context, Some(access)),
                Ok((context, Err(refusal))) => return refused(&state, &context, kind, refusal).await,
                Err(join_error) => {
                    return error_response(
                        &state.next_request_id(),
                        ApiError::internal(format!("request task failed: {join_error}")),
                    )
                }
            }
        }
    };
    let body = match body_bytes_max {
        None => Vec::new(),
        Some(limit) => {
            let checked = match body_kind {
                BodyKind::Fhir => check_content_type(&parts.headers),
                BodyKind::Form => check_form_content_type(&parts.headers),
            };
            if let Err(error) = checked {
                return error_response(&context.request_id, error);
            }
            match to_bytes(body, limit).await {
                Ok(bytes) => bytes.to_vec(),
                Err(_) => {
                    return error_response(
                        &context.request_id,
                        ApiError::new(413, "too-long", format!("the request body exceeds the limit of {limit} bytes")),
                    )
                }
            }
        }
    };
    let mut query = query;
    if body_kind == BodyKind::Form {
        // The body's parameters are part of the search (and of its audit record).
        context.query.extend(form_urlencoded::parse(&body).into_owned());
        let all = form_urlencoded::Serializer::new(String::new()).extend_pairs(&context.query).finish();
        query = Some(format!("{}?{all}", parts.uri.path().trim_start_matches("/fhir/").trim_end_matches("/_search")));
    }
    let writes = matches!(kind, EventKind::Create | EventKind::Update | EventKind::Delete | EventKind::Transaction);
    if writes && state.auditor.locked_down() {
        return error_response(
            &context.request_id,
            ApiError::new(
                503,
                "lock-error",
                "the server is in read-only lockdown after a burst of changes; an administrator must lift it",
            ),
        );
    }
    if body_bytes_max.is_none() && inline_read {
        // Reads run on the async worker: a token check and a read are a few tens of
        // microseconds against SQLite's page cache, and the hop to a blocking thread cost
        // about a third of a read's CPU. Writes wait for an fsync, so they keep the hop.
        let access = match authorize(&state, &context, &method, &path) {
            Ok(access) => access,
            Err(refusal) => return refused(&state, &context, kind, refusal).await,
        };
        let result = operation(&state.service, &context, &access, body);
        return audited(&state, &context, &access, kind, query, result).await;
    }
    let task_state = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let access = match early_access {
            Some(access) => Ok(access),
            None => authorize(&task_state, &context, &method, &path),
        };
        match access {
            Ok(access) => {
                let result = operation(&task_state.service, &context, &access, body);
                (context, Ok((access, result)))
            }
            Err(refusal) => (context, Err(refusal)),
        }
    })
    .await;
    match outcome {
        Ok((context, Ok((access, result)))) => audited(&state, &context, &access, kind, query, result).await,
        Ok((context, Err(refusal))) => refused(&state, &context, kind, refusal).await,
        Err(join_error) => {
            error_response(&state.next_request_id(), ApiError::internal(format!("request task failed: {join_error}")))
        }
    }
}

/// Commits the audit record of a request that reached the data, then answers. A write's
/// own record was committed with it; reads and failures get one here. If it cannot be
/// committed, the client gets 503 instead of the data.
async fn audited(
    state: &AppState,
    context: &Context,
    access: &ClinicalAccess,
    kind: EventKind,
    query: Option<String>,
    result: Result<Response, ApiError>,
) -> Response {
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.status,
    };
    let kind = access.kind_override().unwrap_or(kind);
    let written = access.take_written();
    // A write that wrote nothing (a conditional one that matched) is audited as a read.
    let write = matches!(kind, EventKind::Create | EventKind::Update | EventKind::Delete) && !written.is_empty();
    if status < 400 {
        // The records written with the request's writes feed the alert rules too.
        state.auditor.observe_committed(&written);
    }
    if !(write && status < 400) {
        let now_ms = state.service.store().clock().now_ms();
        let record = crate::audit::read_record(access, kind, status, query, now_ms);
        if let Err(audit_error) = state.auditor.commit(vec![record]).await {
            if status < 400 {
                return error_response(&context.request_id, audit_error);
            }
        }
    }
    match result {
        Ok(response) => response,
        Err(error) => error_response(&context.request_id, error),
    }
}

/// Answers a request refused before it reached any data. An authenticated caller's
/// refusal is audited (an insider probing); an anonymous one only logged.
async fn refused(state: &AppState, context: &Context, kind: EventKind, refusal: Refusal) -> Response {
    if let Some(principal) = &refusal.principal {
        let now_ms = state.service.store().clock().now_ms();
        let mut record = medvault_audit::AuditRecord::new(
            now_ms,
            kind,
            crate::audit::agent(principal, context.address.as_deref(), false),
            &context.request_id,
        );
        record.outcome = crate::audit::outcome_of(refusal.error.status);
        record.detail = Some("refused".into());
        let _ = state.auditor.commit(vec![record]).await;
    }
    error_response(&context.request_id, *refusal.error)
}

/// Why a request got no `ClinicalAccess`, and who asked (if anyone could be identified).
struct Refusal {
    principal: Option<Box<crate::auth::Principal>>,
    error: Box<ApiError>,
}

/// The response of a blocking task: its own, its error as an OperationOutcome, or a 500
/// if the task itself failed.
fn finish(state: &AppState, outcome: Result<(String, Result<Response, ApiError>), tokio::task::JoinError>) -> Response {
    match outcome {
        Ok((_, Ok(response))) => response,
        Ok((request_id, Err(error))) => error_response(&request_id, error),
        Err(join_error) => {
            error_response(&state.next_request_id(), ApiError::internal(format!("request task failed: {join_error}")))
        }
    }
}

fn authorize(
    state: &AppState,
    context: &Context,
    method: &axum::http::Method,
    path: &str,
) -> Result<ClinicalAccess, Refusal> {
    if state.danger_skip_authorization {
        return Ok(crate::auth::danger_unchecked_access());
    }
    let authorization = context.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal =
        state.auth.authenticate(authorization).map_err(|error| Refusal { principal: None, error: Box::new(error) })?;
    tracing::debug!(request_id = %context.request_id, client = %principal.client, %method, path, "request");
    let request = RequestInfo { request_id: context.request_id.clone(), address: context.address.clone() };
    authorize_clinical(state.service.store(), state.auth.care_cache(), &principal, request)
        .map_err(|error| Refusal { principal: Some(Box::new(principal)), error: Box::new(error) })
}

fn context(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<Context, (String, ApiError)> {
    let request_id = state.next_request_id();
    let fail = |error| Err((request_id.clone(), error));
    let query_text = query.unwrap_or("");
    if query_text.len() > REQUEST_URL_BYTES_MAX {
        return fail(ApiError::new(414, "too-long", format!("the query exceeds {REQUEST_URL_BYTES_MAX} bytes")));
    }
    let query: Vec<(String, String)> = form_urlencoded::parse(query_text.as_bytes()).into_owned().collect();
    if let Some((_, format)) = query.iter().find(|(name, _)| name == "_format") {
        if !matches!(format.as_str(), "json" | "application/json" | "application/fhir+json" | "application/fhir json") {
            return fail(ApiError::new(
                406,
                "not-supported",
                format!("_format '{format}' is not supported; this server speaks JSON"),
            ));
        }
    } else if let Err(error) = check_accept(headers) {
        return fail(error);
    }
    let base = base_url(state, headers);
    Ok(Context { request_id, base, query, headers: headers.clone(), address: None })
}

fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(header::ACCEPT) else { return Ok(()) };
    let accept = accept.to_str().unwrap_or("");
    let acceptable = accept.split(',').any(|item| {
        let media = item.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        matches!(
            media.as_str(),
            "" | "*/*" | "application/*" | "application/json" | "application/fhir+json" | "application/json+fhir"
        )
    });
    if acceptable {
        Ok(())
    } else {
        Err(ApiError::new(
            406,
            "not-supported",
            format!("cannot answer in '{accept}'; this server speaks application/fhir+json"),
        ))
    }
}

fn check_form_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media == "application/x-www-form-urlencoded" {
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            "not-supported",
            format!(
                "Content-Type '{content_type}' is not supported; POST _search takes application/x-www-form-urlencoded"
            ),
        ))
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if matches!(media.as_str(), "application/fhir+json" | "application/json" | "application/json+fhir") {
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            "not-supported",
            format!("Content-Type '{content_type}' is not supported; send application/fhir+json"),
        ))
    }
}

/// The base URL the client used, so that paging links work for it.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(base) = &state.config.public_base {
        return base.clone();
    }
    format!("{}/fhir", root_url(state, headers))
}

/// The server's root URL as the client reached it (the FHIR base without `/fhir`).
pub(crate) fn root_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(base) = &state.config.public_base {
        return base.strip_suffix("/fhir").unwrap_or(base).to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host.len() <= 255
                && host.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'))
        })
        .unwrap_or(&state.config.fallback_authority);
    format!("{}://{host}", state.config.scheme)
}

fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(value) => parse_etag(value.to_str().unwrap_or("")).map(Some),
    }
}

fn prefer_values(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_ascii_lowercase()))
}

fn return_preference(headers: &HeaderMap) -> ReturnPreference {
    for value in prefer_values(headers) {
        match value.as_str() {
            "return=minimal" => return ReturnPreference::Minimal,
            "return=operationoutcome" => return ReturnPreference::OperationOutcome,
            "return=representation" => return ReturnPreference::Representation,
            _ => {}
        }
    }
    ReturnPreference::Representation
}

fn prefer_lenient(headers: &HeaderMap) -> bool {
    prefer_values(headers).any(|value| value == "handling=lenient")
}

fn written_response(status: StatusCode, written: &Written, context: &Context) -> Response {
    let location = format!("{}/{}/{}/_history/{}", context.base, written.resource_type, written.id, written.version);
    let mut response = match return_preference(&context.headers) {
        ReturnPreference::Representation => resource_response(
            status,
            &written.json,
            written.version,
            written.recorded_ms,
            Some(&location),
            &context.request_id,
        ),
        preference => {
            let mut response = if preference == ReturnPreference::OperationOutcome {
                let outcome = operation_outcome(&[medvault_fhir::outcome::Issue::information(
                    "informational",
                    format!("{}/{} version {} stored", written.resource_type, written.id, written.version),
                )]);
                fhir_response(status, serde_json::to_vec(&outcome).unwrap_or_default(), &context.request_id)
            } else {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = status;
                insert_header(&mut response, "x-request-id", &context.request_id);
                response
            };
            insert_header(&mut response, header::ETAG, &etag(written.version));
            insert_header(
                &mut response,
                header::LAST_MODIFIED,
                &medvault_base::time::format_http_date(written.recorded_ms),
            );
            insert_header(&mut response, header::LOCATION, &location);
            response
        }
    };
    if status == StatusCode::CREATED || status == StatusCode::OK {
        insert_header(&mut response, header::CONTENT_LOCATION, &location);
    }
    insert_receipt(&mut response, written);
    response
}

/// The ledger receipt of a write (`docs/format/checkpoint.md`): the new version's leaf and
/// the size of the signed checkpoint that covers it, so the client can demand a proof.
fn insert_receipt(response: &mut Response, written: &Written) {
    if !written.noop {
        insert_header(response, LEAF_INDEX_HEADER, &written.leaf_index.to_string());
        insert_header(response, CHECKPOINT_SIZE_HEADER, &written.checkpoint_size.to_string());
    }
}

pub const LEAF_INDEX_HEADER: &str = "x-medvault-leaf-index";
pub const CHECKPOINT_SIZE_HEADER: &str = "x-medvault-checkpoint-size";

fn resource_response(
    status: StatusCode,
    json: &[u8],
    version: u64,
    recorded_ms: i64,
    location: Option<&str>,
    request_id: &str,
) -> Response {
    let mut response = fhir_response(status, json.to_vec(), request_id);
    insert_header(&mut response, header::ETAG, &etag(version));
    insert_header(&mut response, header::LAST_MODIFIED, &medvault_base::time::format_http_date(recorded_ms));
    if let Some(location) = location {
        insert_header(&mut response, header::LOCATION, location);
    }
    response
}

fn fhir_response(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    insert_header(&mut response, "x-request-id", request_id);
    response
}

fn insert_header<K: header::IntoHeaderName>(response: &mut Response, name: K, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// The one place an error becomes a response; detail goes to the log, not the client.
pub fn error_response(request_id: &str, error: ApiError) -> Response {
    if error.security_event {
        tracing::warn!(target: "medvault::security", request_id, status = error.status, internal = error.internal.as_deref().unwrap_or(""), diagnostics = %error.issues.first().map(|i| i.diagnostics.as_str()).unwrap_or(""), "security event");
    } else if error.status >= 500 {
        tracing::error!(
            request_id,
            status = error.status,
            internal = error.internal.as_deref().unwrap_or(""),
            "request failed"
        );
    } else {
        tracing::debug!(request_id, status = error.status, "request refused");
    }
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&operation_outcome(&error.issues)).unwrap_or_default();
    let mut response = fhir_response(status, body, request_id);
    if let Some(seconds) = error.retry_after_s {
        insert_header(&mut response, header::RETRY_AFTER, &seconds.to_string());
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"medvault\""));
    }
    response
}
