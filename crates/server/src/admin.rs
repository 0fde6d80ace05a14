//! The JSON endpoints around the FHIR API: login (`/auth/…`) and administration
//! (`/admin/…`). Bodies and answers are `application/json`; errors are OperationOutcomes
//! like everywhere else. Every handler runs on a blocking thread: password checks are
//! Argon2id, and at most [`PASSWORD_CHECKS_CONCURRENT`] run at once so a login flood
//! cannot take the CPU from clinical reads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::accounts::{self, Enrolment, NewAccount};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::http::{error_response, AppState};
use crate::login::{LoginStep, NewSession, SecondFactor};

/// Argon2id checks running at once; more logins wait their turn.
pub const PASSWORD_CHECKS_CONCURRENT: usize = 4;
/// Largest JSON body of a login or administration request.
const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;

/// The peer address of a connection, set by [`crate::serve::serve`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/mfa", post(mfa))
        .route("/auth/logout", post(logout))
        .route("/auth/session", get(session))
        .route("/auth/break-glass", post(break_glass))
        .route("/auth/token", post(token))
        .route("/.well-known/smart-configuration", get(smart_configuration))
        .route("/admin/users", get(list_users).post(create_user))
        .route("/admin/users/{username}/{action}", post(user_action))
        .route("/admin/alerts", get(list_alerts))
        .route("/admin/lockdown/lift", post(lift_lockdown))
        .route("/admin/break-glass", get(list_break_glass))
        .route("/admin/break-glass/{grant}/review", post(review_break_glass))
}

/// What a handler gets: the parsed body, the caller (if the route needs one), the address.
struct Call {
    body: Value,
    principal: Option<Principal>,
    address: IpAddr,
}

type Handler = Box<dyn FnOnce(&AppState, Call) -> Result<(StatusCode, Value), ApiError> + Send>;

async fn run(
    state: Arc<AppState>,
    request: Request,
    authenticated: bool,
    password_work: bool,
    handler: Handler,
) -> Response {
    let request_id = state.next_request_id();
    let address = request.extensions().get::<PeerAddr>().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |peer| peer.0.ip());
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let has_body = request.method() == axum::http::Method::POST;
    let bytes = match to_bytes(request.into_body(), ADMIN_BODY_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error_response(
                &request_id,
                ApiError::new(413, "too-long", format!("the body exceeds {ADMIN_BODY_BYTES_MAX} bytes")),
            )
        }
    };
    let _permit = if password_work { state.password_slots.clone().acquire_owned().await.ok() } else { None };
    let task_state = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let body = if has_body && !bytes.is_empty() {
            serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
        } else {
            Value::Null
        };
        let principal =
            if authenticated { Some(task_state.auth.authenticate(authorization.as_deref())?) } else { None };
        handler(&task_state, Call { body, principal, address })
    })
    .await;
    match outcome {
        Ok(Ok((status, value))) => {
            let mut response = Response::new(Body::from(serde_json::to_vec(&value).unwrap_or_default()));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            response
        }
        Ok(Err(error)) => error_response(&request_id, error),
        Err(join) => error_response(&request_id, ApiError::internal(format!("request task failed: {join}"))),
    }
}

fn text<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("the body needs \"{name}\" (a string)")))
}

fn optional_text<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(ApiError::bad_request(format!("\"{name}\" must be a string"))),
    }
}

fn require(call: &Call, roles: &[Role]) -> Result<Principal, ApiError> {
    let principal = call.principal.clone().ok_or_else(ApiError::unauthorized)?;
    if roles.contains(&principal.role) && principal.user_id.is_some() {
        Ok(principal)
    } else {
        let names: Vec<_> = roles.iter().map(|r| r.name()).collect();
        Err(ApiError::forbidden(format!("this needs a logged-in {}", names.join(" or "))))
    }
}

fn session_json(session: &NewSession) -> Value {
    json!({
        "access_token": session.token.as_str(),
        "token_type": "Bearer",
        "expires_in": session.idle_s,
        "scope": session.scopes,
        "username": session.username,
        "role": session.role,
        "session_expires_at": medvault_base::time::format_instant(session.expires_ms),
    })
}

fn enrolment_json(enrolment: &Enrolment) -> Value {
    json!({
        "totp_secret": enrolment.secret_base32.as_str(),
        "otpauth_uri": enrolment.otpauth_uri.as_str(),
        "recovery_codes": enrolment.recovery_codes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
    })
}

fn user_json(user: &medvault_store::accounts::UserRecord) -> Value {
    json!({
        "username": user.username,
        "role": user.role,
        "fhirUser": user.fhir_user,
        "scope": user.scopes,
        "mfa": user.mfa_required,
        "locked": user.locked,
        "failures": user.failures,
        "disabled": user.disabled_ms.is_some(),
        "created": medvault_base::time::format_instant(user.created_ms),
    })
}

async fn login(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        false,
        true,
        Box::new(|state, call| {
            let username = text(&call.body, "username")?;
            let password = text(&call.body, "password")?;
            let scope = optional_text(&call.body, "scope")?;
            match state.auth.login(username, password, scope, call.address)? {
                LoginStep::SecondFactor { ticket, expires_in_s } => Ok((
                    StatusCode::OK,
                    json!({"mfa_required": true, "mfa_ticket": ticket.as_str(), "expires_in": expires_in_s}),
                )),
                LoginStep::Session(session) => Ok((StatusCode::OK, session_json(&session))),
            }
        }),
    )
    .await
}

async fn mfa(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        false,
        true,
        Box::new(|state, call| {
            let ticket = text(&call.body, "mfa_ticket")?;
            let factor = match (optional_text(&call.body, "code")?, optional_text(&call.body, "recovery_code")?) {
                (Some(code), None) => SecondFactor::Totp(code),
                (None, Some(code)) => SecondFactor::RecoveryCode(code),
                _ => {
                    return Err(ApiError::bad_request(
                        "give either \"code\" (from the authenticator app) or \"recovery_code\"",
                    ))
                }
            };
            let session = state.auth.second_factor(ticket, factor, call.address)?;
            Ok((StatusCode::OK, session_json(&session)))
        }),
    )
    .await
}

/// The OAuth token endpoint of SMART Backend Services (form-encoded body).
async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = state.next_request_id();
    let audience = format!("{}/auth/token", crate::http::root_url(&state, request.headers()));
    let bytes = match to_bytes(request.into_body(), ADMIN_BODY_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return error_response(&request_id, ApiError::new(413, "too-long", "the body is too large")),
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    let task_state = state.clone();
    let outcome = tokio::task::spawn_blocking(move || task_state.auth.client_credentials(&form, &audience)).await;
    match outcome {
        Ok(Ok((status, value))) => {
            let mut response = Response::new(Body::from(serde_json::to_vec(&value).unwrap_or_default()));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(Err(error)) => error_response(&request_id, error),
        Err(join) => error_response(&request_id, ApiError::internal(format!("request task failed: {join}"))),
    }
}

/// SMART's discovery document: where and how backend services get tokens.
async fn smart_configuration(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let root = crate::http::root_url(&state, request.headers());
    let body = json!({
        "token_endpoint": format!("{root}/auth/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds", "system/*.rs", "user/*.cruds", "patient/*.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v2"],
    });
    let mut response = Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn logout(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        true,
        false,
        Box::new(|state, call| {
            let principal = call.principal.ok_or_else(ApiError::unauthorized)?;
            state.auth.logout(&principal)?;
            Ok((StatusCode::OK, json!({"logged_out": true})))
        }),
    )
    .await
}

async fn session(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        true,
        false,
        Box::new(|_, call| {
            let principal = call.principal.ok_or_else(ApiError::unauthorized)?;
            Ok((
                StatusCode::OK,
                json!({
                    "name": principal.client,
                    "role": principal.role.name(),
                    "fhirUser": principal.fhir_user.as_ref().map(|(t, id)| format!("{t}/{id}")),
                    "scope": principal.scopes.to_string(),
                    "session": principal.session.is_some(),
                }),
            ))
        }),
    )
    .await
}

async fn break_glass(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        true,
        false,
        Box::new(|state, call| {
            let principal = require(&call, &[Role::Clinician])?;
            let patient = text(&call.body, "patient")?;
            let patient_id = patient.strip_prefix("Patient/").unwrap_or(patient);
            let reason = text(&call.body, "reason")?;
            let (grant, expires_ms) = state.auth.break_glass(&principal, patient_id, reason)?;
            Ok((
                StatusCode::CREATED,
                json!({
                    "grant": grant,
                    "patient": format!("Patient/{patient_id}"),
                    "expires_at": medvault_base::time::format_instant(expires_ms),
                    "review": "every break-glass access is reviewed by an auditor",
                }),
            ))
        }),
    )
    .await
}

async fn list_users(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        true,
        false,
        Box::new(|state, call| {
            require(&call, &[Role::Administrator])?;
            let users = state.service.store().users()?;
            Ok((StatusCode::OK, json!({"users": users.iter().map(user_json).collect::<Vec<_>>()})))
        }),
    )
    .await
}

async fn create_user(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(state, request, true, true, Box::new(|state, call| {
        let admin = require(&call, &[Role::Administrator])?;
        let role_name = text(&call.body, "role")?;
        let role = Role::parse(role_name).ok_or_else(|| ApiError::bad_request(format!("unknown role '{role_name}'")))?;
        let mfa = match call.body.get("mfa") {
            None => true,
            Some(Value::Bool(mfa)) => *mfa,
            Some(_) => return Err(ApiError::bad_request("\"mfa\" must be true or false")),
        };
        let account = NewAccount {
            username: text(&call.body, "username")?,
            role,
            password: text(&call.body, "password")?,
            fhir_user: optional_text(&call.body, "fhirUser")?,
            scopes: optional_text(&call.body, "scope")?,
            mfa,
        };
        let store = state.service.store();
        let (_, enrolment) = accounts::create_account(store, state.auth.config().password, &account)?;
        tracing::info!(target: "medvault::security", by = %admin.client, user = account.username, "user created over HTTP");
        crate::audit::account_change(
            store,
            &admin.client,
            admin.role.name(),
            medvault_audit::EventKind::MfaEnrolment,
            account.username,
            "user-created",
        )?;
        let user = accounts::user(store, account.username)?;
        let mut answer = user_json(&user);
        if let Some(enrolment) = enrolment {
            answer["enrolment"] = enrolment_json(&enrolment);
        }
        Ok((StatusCode::CREATED, answer))
    }))
    .await
}

async fn user_action(
    State(state): State<Arc<AppState>>,
    Path((username, action)): Path<(String, String)>,
    request: Request,
) -> Response {
    let password_work = action == "password";
    run(state, request, true, password_work, Box::new(move |state, call| {
        let admin = require(&call, &[Role::Administrator])?;
        let store = state.service.store();
        let user = accounts::user(store, &username)?;
        let answer = match action.as_str() {
            "unlock" => {
                store.unlock_user(user.user_id)?;
                json!({"unlocked": user.username})
            }
            "disable" => {
                store.set_user_disabled(user.user_id, true)?;
                json!({"disabled": user.username})
            }
            "enable" => {
                store.set_user_disabled(user.user_id, false)?;
                json!({"enabled": user.username})
            }
            "revoke-sessions" => json!({"sessions_ended": store.revoke_user_sessions(user.user_id)?}),
            "reset-mfa" => enrolment_json(&accounts::reset_mfa(store, &user)?),
            "password" => {
                accounts::set_password(store, state.auth.config().password, &user, text(&call.body, "password")?)?;
                json!({"password_changed": user.username})
            }
            "assign" | "unassign" => {
                let patient = text(&call.body, "patient")?;
                let patient_id = patient.strip_prefix("Patient/").unwrap_or(patient);
                if !medvault_fhir::is_valid_id(patient_id) {
                    return Err(ApiError::bad_request("the patient id is not a valid FHIR id"));
                }
                if user.role != Role::Clinician.name() {
                    return Err(ApiError::bad_request("only clinicians are assigned to patients"));
                }
                if action == "assign" {
                    store.assign_patient(user.user_id, patient_id, &admin.client)?;
                    json!({"assigned": format!("Patient/{patient_id}"), "to": user.username})
                } else {
                    json!({"unassigned": store.unassign_patient(user.user_id, patient_id)?})
                }
            }
            other => return Err(ApiError::not_found(format!("no user action '{other}' (unlock, disable, enable, revoke-sessions, reset-mfa, password, assign, unassign)"))),
        };
        tracing::warn!(target: "medvault::security", by = %admin.client, user = %user.username, action = %action, "account changed");
        let kind = match action.as_str() {
            "unlock" => medvault_audit::EventKind::Unlock,
            "reset-mfa" => medvault_audit::EventKind::MfaReset,
            _ => medvault_audit::EventKind::AccountChange,
        };
        crate::audit::account_change(store, &admin.client, admin.role.name(), kind, &user.username, &action)?;
        Ok((StatusCode::OK, answer))
    }))
    .await
}

/// Lifts a read-only lockdown (administrators); audited.
async fn lift_lockdown(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        true,
        false,
        Box::new(|state, call| {
            let admin = require(&call, &[Role::Administrator])?;
            let was = state.auditor.lift_lockdown();
            crate::audit::account_change(
                state.service.store(),
                &admin.client,
                admin.role.name(),
                medvault_audit::EventKind::Lockdown,
                "server",
                if was { "lockdown-lifted" } else { "lockdown-not-in-force" },
            )?;
            Ok((StatusCode::OK, json!({"lockdown_lifted": was})))
        }),
    )
    .await
}

/// The latest alerts of the audit rules (auditors).
async fn list_alerts(State(state): State<Arc<AppState>>, request: Request) -> Response {
    run(
        state,
        request,
        true,
        false,
        Box::new(|state, call| {
            require(&call, &[Role::Auditor])?;
            let alerts: Vec<Value> = state
                .auditor
                .recent_alerts()
                .iter()
                .map(|alert| {
                    json!({"alert": alert.kind.name(), "agent": alert.agent,
                       "at": medvault_base::time::format_instant(alert.at_ms), "detail": alert.detail})
                })
                .collect();
            Ok((StatusCode::OK, json!({"alerts": alerts})))
        }),
    )
    .await
}

async fn list_break_glass(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let open_only = request.uri().query().is_some_and(|q| q.split('&').any(|p| p == "status=open"));
    run(
        state,
        request,
        true,
        false,
        Box::new(move |state, call| {
            require(&call, &[Role::Auditor])?;
            let grants = state.service.store().break_glass_grants(open_only)?;
            let grants: Vec<Value> = grants.iter().map(break_glass_json).collect();
            Ok((StatusCode::OK, json!({"grants": grants})))
        }),
    )
    .await
}

pub fn break_glass_json(grant: &medvault_store::accounts::BreakGlassRecord) -> Value {
    json!({
        "grant": grant.grant_id,
        "user": grant.username,
        "patient": grant.patient,
        "reason": grant.reason,
        "opened": medvault_base::time::format_instant(grant.created_ms),
        "expires": medvault_base::time::format_instant(grant.expires_ms),
        "reviewed": grant.reviewed_ms.map(medvault_base::time::format_instant),
        "reviewer": grant.reviewer,
        "decision": grant.decision,
    })
}

/// The decisions an auditor closes a break-glass review with.
pub const REVIEW_DECISIONS: [&str; 2] = ["justified", "unjustified"];

async fn review_break_glass(
    State(state): State<Arc<AppState>>,
    Path(grant): Path<String>,
    request: Request,
) -> Response {
    run(state, request, true, false, Box::new(move |state, call| {
        let auditor = require(&call, &[Role::Auditor])?;
        let grant: i64 = grant.parse().map_err(|_| ApiError::bad_request("the grant is a number"))?;
        let decision = text(&call.body, "decision")?;
        if !REVIEW_DECISIONS.contains(&decision) {
            return Err(ApiError::bad_request("the decision is \"justified\" or \"unjustified\""));
        }
        if !state.service.store().review_break_glass(grant, &auditor.client, decision)? {
            return Err(ApiError::not_found(format!("break-glass grant {grant} does not exist or was already reviewed")));
        }
        crate::audit::account_change(
            state.service.store(),
            &auditor.client,
            auditor.role.name(),
            medvault_audit::EventKind::BreakGlass,
            &format!("grant-{grant}"),
            &format!("review-{decision}"),
        )?;
        if decision == "unjustified" {
            tracing::warn!(target: "medvault::alert", alert = "break-glass-unjustified", grant, by = %auditor.client, "break-glass access judged unjustified");
        }
        Ok((StatusCode::OK, json!({"grant": grant, "decision": decision})))
    }))
    .await
}
