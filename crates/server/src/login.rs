//! Login and sessions: password, then second factor, then a session token; and the
//! bearer-token check every request makes.
//!
//! Defences, in the order a request meets them (`SECURITY.md`, "Accounts and login"):
//! per-address throttling (password spraying), per-account progressive delay and lockout
//! (kept in the `users` row, so restarts do not reset it; simulated in memory for unknown
//! names so they answer alike), one Argon2id check per attempt that passes the gates (a
//! dummy check of equal cost for unknown names), then TOTP with single use of each code.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use medvault_auth::password::{self, PasswordParams};
use medvault_auth::scope::ScopeSet;
use medvault_auth::throttle::{AccountAttempts, AddressPolicy, AddressThrottle, Gate, LockoutPolicy};
use medvault_auth::totp::{Totp, TotpAlgorithm, TotpCheck};
use medvault_base::limits::{
    LOGIN_TICKETS_MAX, SESSION_ACTIVITY_ENTRIES_MAX, SESSION_CACHE_ENTRIES_MAX, UNKNOWN_USER_ENTRIES_MAX,
};
use medvault_store::accounts::{SessionRecord, UserRecord};
use medvault_store::Store;
use zeroize::Zeroizing;

use crate::auth::{CareCache, Principal, Role};
use crate::error::ApiError;

/// Timeouts and policies of login and sessions; [`AuthConfig::default`] is what `serve` uses.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub password: PasswordParams,
    pub lockout: LockoutPolicy,
    pub address: AddressPolicy,
    /// A session unused this long ends (NIST SP 800-63B AAL2: 30 minutes).
    pub idle_ms: i64,
    /// Administrators' sessions end sooner when idle.
    pub admin_idle_ms: i64,
    /// No session outlives this, used or not (AAL2: 12 hours).
    pub absolute_ms: i64,
    /// Between the password and the second factor.
    pub ticket_ms: i64,
    /// Wrong second factors a ticket survives.
    pub ticket_attempts_max: u32,
    /// How long break-glass access to one patient lasts.
    pub break_glass_ms: i64,
    /// Session activity is written to the store at most this often per session.
    pub touch_interval_ms: i64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            password: PasswordParams::DEFAULT,
            lockout: LockoutPolicy::DEFAULT,
            address: AddressPolicy::DEFAULT,
            idle_ms: 30 * 60_000,
            admin_idle_ms: 15 * 60_000,
            absolute_ms: 12 * 3_600_000,
            ticket_ms: 5 * 60_000,
            ticket_attempts_max: 5,
            break_glass_ms: 60 * 60_000,
            touch_interval_ms: 60_000,
        }
    }
}

/// The first step's answer: a ticket for the second factor, or (accounts without MFA)
/// a session at once.
#[derive(Debug)]
pub enum LoginStep {
    SecondFactor { ticket: Zeroizing<String>, expires_in_s: i64 },
    Session(NewSession),
}

/// A session just made; `token` is shown once.
#[derive(Debug)]
pub struct NewSession {
    pub token: Zeroizing<String>,
    pub scopes: String,
    pub idle_s: i64,
    pub expires_ms: i64,
    pub username: String,
    pub role: &'static str,
}

/// The second factor a client presents.
pub enum SecondFactor<'a> {
    Totp(&'a str),
    RecoveryCode(&'a str),
}

struct Ticket {
    user_id: i64,
    expires_ms: i64,
    attempts: u32,
    needs_rehash: bool,
    password: Option<Zeroizing<String>>,
    scopes: Option<String>,
}

/// Holds the login state that lives in memory (throttles, tickets, session activity).
pub struct Authenticator {
    store: Arc<Store>,
    config: AuthConfig,
    addresses: AddressThrottle,
    unknown: Mutex<HashMap<String, AccountAttempts>>,
    tickets: Mutex<HashMap<[u8; 32], Ticket>>,
    /// Last activity per session digest, newer than the stored `last_seen_ms`.
    activity: Mutex<HashMap<[u8; 32], i64>>,
    /// Sessions as last read, with the store's change marker at the time: reused only while
    /// nothing has been committed since, so a revocation is seen by the next request.
    sessions: RwLock<HashMap<[u8; 32], Arc<CachedSession>>>,
    care_cache: Arc<CareCache>,
    auditor: Arc<crate::audit::Auditor>,
    password_checks: AtomicU64,
}

struct CachedSession {
    marker: medvault_store::sqlite::ChangeMarker,
    session: SessionRecord,
    user_id: i64,
    username: String,
    role: Role,
    fhir_user: Option<(String, String)>,
    practitioner_token: Option<[u8; 32]>,
    disabled: bool,
    sessions_after_ms: i64,
    scopes: Arc<ScopeSet>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("config", &self.config).finish_non_exhaustive()
    }
}

const WRONG_CREDENTIALS: &str = "the user name or password is wrong";

impl Authenticator {
    pub fn new(store: Arc<Store>, config: AuthConfig, auditor: Arc<crate::audit::Auditor>) -> Self {
        let addresses = AddressThrottle::new(config.address);
        Self {
            store,
            config,
            addresses,
            unknown: Mutex::new(HashMap::new()),
            tickets: Mutex::new(HashMap::new()),
            activity: Mutex::new(HashMap::new()),
            sessions: RwLock::new(HashMap::new()),
            care_cache: Arc::new(CareCache::default()),
            auditor,
            password_checks: AtomicU64::new(0),
        }
    }

    /// The care relationships earlier requests looked up (see [`CareCache`]).
    pub fn care_cache(&self) -> &Arc<CareCache> {
        &self.care_cache
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Argon2id verifications run so far (real and dummy): what a brute-force test counts.
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> i64 {
        self.store.clock().now_ms()
    }

    /// Audits a security event of an account (or of a name that is none).
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        kind: medvault_audit::EventKind,
        name: &str,
        role: &str,
        user_id: Option<i64>,
        address: Option<IpAddr>,
        outcome: medvault_audit::Outcome,
        detail: &str,
    ) {
        let agent = medvault_audit::Agent {
            name: name.to_string(),
            role: role.to_string(),
            user_id,
            purpose_of_use: None,
            address: address.map(|a| a.to_string()),
        };
        let mut record = medvault_audit::AuditRecord::new(self.now_ms(), kind, agent, "login");
        record.outcome = outcome;
        record.detail = Some(detail.to_string());
        self.auditor.security_event(record);
    }

    /// Step one: the password. Unknown names, wrong passwords and disabled accounts get
    /// the same answer after the same work.
    pub fn login(
        &self,
        username: &str,
        password_text: &str,
        requested_scopes: Option<&str>,
        address: IpAddr,
    ) -> Result<LoginStep, ApiError> {
        let now_ms = self.now_ms();
        if password_text.chars().count() > password::PASSWORD_CHARS_MAX || username.len() > 256 {
            return Err(ApiError::new(401, "login", WRONG_CREDENTIALS));
        }
        gate_to_result(self.addresses.check(address, now_ms), "too many failed logins from this address")?;
        let Some(user) = self.store.user_by_name(username)? else {
            return self.unknown_user_attempt(username, password_text, address, now_ms);
        };
        let mut attempts = account_attempts(&user);
        gate_to_result(self.config.lockout.gate(&attempts, now_ms), "too many failed logins for this account")?;
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        let check = password::verify_password(&user.password, password_text, self.config.password)
            .map_err(|e| ApiError::internal(format!("password check of user {}: {e}", user.user_id)))?;
        if !check.matched || user.disabled_ms.is_some() {
            self.fail(&user, &mut attempts, address, now_ms, "wrong password")?;
            return Err(ApiError::new(401, "login", WRONG_CREDENTIALS));
        }
        let scopes = match requested_scopes {
            Some(requested) => Some(narrow_scopes(requested, &user.scopes)?),
            None => None,
        };
        if !user.mfa_required {
            return self
                .open_session(&user, check.needs_rehash.then(|| Zeroizing::new(password_text.to_string())), scopes)
                .map(LoginStep::Session);
        }
        if !user.mfa_enrolled {
            return Err(ApiError::forbidden("this account has no second factor enrolled; ask an administrator"));
        }
        let minted = medvault_crypto::new_session_token().map_err(|e| ApiError::internal(e.to_string()))?;
        let mut tickets = self.tickets.lock().map_err(|_| ApiError::internal("poisoned"))?;
        tickets.retain(|_, ticket| ticket.expires_ms > now_ms);
        if tickets.len() >= LOGIN_TICKETS_MAX {
            return Err(ApiError::unavailable("too many logins in progress; try again shortly"));
        }
        tickets.insert(
            minted.digest,
            Ticket {
                user_id: user.user_id,
                expires_ms: now_ms + self.config.ticket_ms,
                attempts: 0,
                needs_rehash: check.needs_rehash,
                password: check.needs_rehash.then(|| Zeroizing::new(password_text.to_string())),
                scopes,
            },
        );
        Ok(LoginStep::SecondFactor { ticket: minted.token, expires_in_s: self.config.ticket_ms / 1000 })
    }

    fn unknown_user_attempt(
        &self,
        username: &str,
        password_text: &str,
        address: IpAddr,
        now_ms: i64,
    ) -> Result<LoginStep, ApiError> {
        let mut attempts = {
            let unknown = self.unknown.lock().map_err(|_| ApiError::internal("poisoned"))?;
            unknown.get(username).cloned().unwrap_or_default()
        };
        gate_to_result(self.config.lockout.gate(&attempts, now_ms), "too many failed logins for this account")?;
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        password::verify_dummy(password_text, self.config.password);
        self.config.lockout.record_failure(&mut attempts, now_ms);
        {
            let mut unknown = self.unknown.lock().map_err(|_| ApiError::internal("poisoned"))?;
            if unknown.len() >= UNKNOWN_USER_ENTRIES_MAX {
                unknown.clear();
            }
            unknown.insert(username.to_string(), attempts);
        }
        self.addresses.record_failure(address, now_ms);
        tracing::info!(target: "medvault::security", %address, "login failed: unknown user name");
        self.audit(
            medvault_audit::EventKind::LoginFailure,
            username,
            "",
            None,
            Some(address),
            medvault_audit::Outcome::MinorFailure,
            "unknown-user",
        );
        Err(ApiError::new(401, "login", WRONG_CREDENTIALS))
    }

    fn fail(
        &self,
        user: &UserRecord,
        attempts: &mut AccountAttempts,
        address: IpAddr,
        now_ms: i64,
        what: &str,
    ) -> Result<(), ApiError> {
        let was_locked = attempts.locked;
        self.config.lockout.record_failure(attempts, now_ms);
        self.addresses.record_failure(address, now_ms);
        self.store.record_login_failure(user.user_id, attempts.consecutive_failures, now_ms, attempts.locked)?;
        tracing::warn!(target: "medvault::security", user = %user.username, %address, failures = attempts.consecutive_failures, "login failed: {what}");
        let detail = what.replace(' ', "-");
        self.audit(
            medvault_audit::EventKind::LoginFailure,
            &user.username,
            &user.role,
            Some(user.user_id),
            Some(address),
            medvault_audit::Outcome::MinorFailure,
            &detail,
        );
        if attempts.locked && !was_locked {
            tracing::warn!(target: "medvault::security", user = %user.username, "account locked after {} consecutive failures; an administrator must unlock it", attempts.consecutive_failures);
            self.audit(
                medvault_audit::EventKind::Lockout,
                &user.username,
                &user.role,
                Some(user.user_id),
                Some(address),
                medvault_audit::Outcome::SeriousFailure,
                "locked-after-consecutive-failures",
            );
        }
        Ok(())
    }

    /// Step two: the second factor against a ticket from step one.
    pub fn second_factor(
        &self,
        ticket: &str,
        factor: SecondFactor<'_>,
        address: IpAddr,
    ) -> Result<NewSession, ApiError> {
        let now_ms = self.now_ms();
        gate_to_result(self.addresses.check(address, now_ms), "too many failed logins from this address")?;
        let digest = medvault_crypto::access_token_digest(ticket);
        let (user_id, needs_rehash, password_text, scopes) = {
            let mut tickets = self.tickets.lock().map_err(|_| ApiError::internal("poisoned"))?;
            match tickets.get_mut(&digest) {
                Some(found) if found.expires_ms > now_ms && found.attempts < self.config.ticket_attempts_max => {
                    found.attempts += 1;
                    (found.user_id, found.needs_rehash, found.password.clone(), found.scopes.clone())
                }
                _ => {
                    tickets.remove(&digest);
                    return Err(ApiError::new(401, "login", "the login ticket is unknown or expired; log in again"));
                }
            }
        };
        let user = self.store.user_by_id(user_id)?.ok_or_else(|| ApiError::new(401, "login", WRONG_CREDENTIALS))?;
        let mut attempts = account_attempts(&user);
        gate_to_result(self.config.lockout.gate(&attempts, now_ms), "too many failed logins for this account")?;
        let accepted = match factor {
            SecondFactor::Totp(code) => {
                let secret = self
                    .store
                    .totp_secret(&user)?
                    .ok_or_else(|| ApiError::forbidden("this account has no second factor enrolled"))?;
                let totp = Totp::new(secret.expose_secret().to_vec(), TotpAlgorithm::Sha1, 6, 30)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
                let last = user.mfa_last_step.and_then(|s| u64::try_from(s).ok());
                match totp.verify(code, now_s, last) {
                    TotpCheck::Accepted { step } => {
                        if self.store.use_totp_step(user.user_id, step)? {
                            true
                        } else {
                            self.replayed(&user, address);
                            false
                        }
                    }
                    TotpCheck::Replayed => {
                        self.replayed(&user, address);
                        false
                    }
                    TotpCheck::Wrong => false,
                }
            }
            SecondFactor::RecoveryCode(code) => {
                let used =
                    self.store.use_recovery_code(user.user_id, medvault_auth::recovery::recovery_code_digest(code))?;
                if used {
                    tracing::warn!(target: "medvault::security", user = %user.username, left = self.store.recovery_codes_left(user.user_id).unwrap_or(0), "recovery code used");
                }
                used
            }
        };
        if !accepted || user.disabled_ms.is_some() {
            self.fail(&user, &mut attempts, address, now_ms, "wrong second factor")?;
            return Err(ApiError::new(401, "login", "the code is wrong or was already used"));
        }
        self.tickets.lock().map_err(|_| ApiError::internal("poisoned"))?.remove(&digest);
        let rehash = if needs_rehash { password_text } else { None };
        self.open_session(&user, rehash, scopes)
    }

    fn replayed(&self, user: &UserRecord, address: IpAddr) {
        tracing::warn!(target: "medvault::security", user = %user.username, %address, "TOTP code replayed: refused");
    }

    fn open_session(
        &self,
        user: &UserRecord,
        rehash_password: Option<Zeroizing<String>>,
        scopes: Option<String>,
    ) -> Result<NewSession, ApiError> {
        let now_ms = self.now_ms();
        let new_hash = match rehash_password {
            Some(text) => Some(
                password::hash_password(&text, self.config.password).map_err(|e| ApiError::internal(e.to_string()))?,
            ),
            None => None,
        };
        self.store.record_login_success(user.user_id, new_hash)?;
        let role = Role::parse(&user.role).ok_or_else(|| ApiError::internal("a user with an unknown role"))?;
        let idle_ms = if role == Role::Administrator { self.config.admin_idle_ms } else { self.config.idle_ms };
        let minted = medvault_crypto::new_session_token().map_err(|e| ApiError::internal(e.to_string()))?;
        let scopes = scopes.unwrap_or_else(|| user.scopes.clone());
        let expires_ms = now_ms + self.config.absolute_ms;
        self.store.create_session(SessionRecord {
            digest: minted.digest,
            user_id: user.user_id,
            scopes: scopes.clone(),
            created_ms: now_ms,
            last_seen_ms: now_ms,
            idle_ms,
            expires_ms,
            revoked_ms: None,
        })?;
        tracing::info!(target: "medvault::security", user = %user.username, role = role.name(), "login succeeded");
        self.audit(
            medvault_audit::EventKind::Login,
            &user.username,
            role.name(),
            Some(user.user_id),
            None,
            medvault_audit::Outcome::Success,
            "password-and-second-factor",
        );
        Ok(NewSession {
            token: minted.token,
            scopes,
            idle_s: idle_ms / 1000,
            expires_ms,
            username: user.username.clone(),
            role: role.name(),
        })
    }

    /// Checks the bearer token of a request. Unknown, revoked, expired and idle tokens all
    /// get the same 401.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty() && token.len() <= 256)
            .ok_or_else(ApiError::unauthorized)?;
        if token.starts_with(medvault_crypto::SESSION_TOKEN_PREFIX) {
            self.authenticate_session(token)
        } else {
            self.authenticate_service(token)
        }
    }

    fn authenticate_service(&self, token: &str) -> Result<Principal, ApiError> {
        let row = self.store.authenticate_token(token)?.ok_or_else(ApiError::unauthorized)?;
        let scopes = ScopeSet::parse(&row.scopes)
            .map_err(|e| ApiError::internal(format!("token of {} has bad scopes: {e}", row.client)))?;
        Ok(Principal {
            client: row.client,
            role: Role::Service,
            user_id: None,
            fhir_user: None,
            practitioner_token: None,
            scopes: Arc::new(scopes),
            session: None,
            marker: None,
        })
    }

    fn authenticate_session(&self, token: &str) -> Result<Principal, ApiError> {
        let digest = medvault_crypto::access_token_digest(token);
        let marker = self.store.change_marker()?;
        let cached = self.sessions.read().ok().and_then(|sessions| sessions.get(&digest).cloned());
        let cached = match cached.filter(|cached| cached.marker == marker) {
            Some(cached) => cached,
            None => {
                let (session, user) = self.store.session(&digest)?.ok_or_else(ApiError::unauthorized)?;
                let role = Role::parse(&user.role).ok_or_else(|| ApiError::internal("a user with an unknown role"))?;
                let scopes = ScopeSet::parse(&session.scopes)
                    .map_err(|e| ApiError::internal(format!("session of {} has bad scopes: {e}", user.username)))?;
                let fhir_user = user.fhir_user.as_deref().and_then(split_reference);
                let practitioner_token = match &fhir_user {
                    Some((resource_type, id)) if resource_type == "Practitioner" => {
                        Some(self.store.practitioner_token(id))
                    }
                    _ => None,
                };
                let cached = Arc::new(CachedSession {
                    marker,
                    session,
                    user_id: user.user_id,
                    fhir_user,
                    practitioner_token,
                    username: user.username,
                    role,
                    disabled: user.disabled_ms.is_some(),
                    sessions_after_ms: user.sessions_after_ms,
                    scopes: Arc::new(scopes),
                });
                if let Ok(mut sessions) = self.sessions.write() {
                    if sessions.len() >= SESSION_CACHE_ENTRIES_MAX {
                        sessions.clear();
                    }
                    sessions.insert(digest, cached.clone());
                }
                cached
            }
        };
        let session = &cached.session;
        let now_ms = self.now_ms();
        let last_seen = {
            let activity = self.activity.lock().map_err(|_| ApiError::internal("poisoned"))?;
            activity.get(&digest).copied().unwrap_or(0).max(session.last_seen_ms)
        };
        let live = session.revoked_ms.is_none()
            && session.created_ms >= cached.sessions_after_ms
            && now_ms < session.expires_ms
            && now_ms - last_seen < session.idle_ms
            && !cached.disabled;
        if !live {
            return Err(ApiError::unauthorized());
        }
        {
            let mut activity = self.activity.lock().map_err(|_| ApiError::internal("poisoned"))?;
            if activity.len() >= SESSION_ACTIVITY_ENTRIES_MAX {
                activity.clear();
            }
            activity.insert(digest, now_ms);
        }
        if now_ms - session.last_seen_ms >= self.config.touch_interval_ms {
            self.store.touch_session(digest, now_ms)?;
        }
        Ok(Principal {
            client: cached.username.clone(),
            role: cached.role,
            user_id: Some(cached.user_id),
            fhir_user: cached.fhir_user.clone(),
            practitioner_token: cached.practitioner_token,
            scopes: cached.scopes.clone(),
            session: Some(digest),
            marker: Some(marker),
        })
    }

    /// SMART Backend Services: a registered client proves itself with a signed JWT
    /// assertion (RFC 7523, `private_key_jwt`) and gets a short-lived access token. Answers
    /// are OAuth 2.0 token responses (RFC 6749 §5): `Ok` carries the HTTP status and body
    /// of success and of refusal alike.
    pub fn client_credentials(
        &self,
        form: &[(String, String)],
        audience: &str,
    ) -> Result<(u16, serde_json::Value), ApiError> {
        let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let refuse = |status: u16, error: &str, description: &str| {
            Ok((status, serde_json::json!({"error": error, "error_description": description})))
        };
        if field("grant_type") != Some("client_credentials") {
            return refuse(400, "unsupported_grant_type", "only grant_type=client_credentials is supported");
        }
        if field("client_assertion_type") != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            return refuse(
                400,
                "invalid_request",
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            );
        }
        let Some(assertion) = field("client_assertion") else {
            return refuse(400, "invalid_request", "client_assertion is missing");
        };
        // The client id is the assertion's `iss`; read it unverified only to find the keys.
        let Some(client_id) = unverified_issuer(assertion) else {
            return refuse(401, "invalid_client", "the client assertion is not a JWT with an iss claim");
        };
        let client = match self.store.client(&client_id)? {
            Some(client) if client.disabled_ms.is_none() => client,
            _ => {
                tracing::warn!(target: "medvault::security", "client assertion from an unknown or disabled client");
                return refuse(401, "invalid_client", "the client assertion was not accepted");
            }
        };
        let keys = serde_json::from_str(&client.jwks)
            .map_err(|e| ApiError::internal(format!("stored JWKS of {client_id}: {e}")))
            .and_then(|jwks| {
                medvault_auth::jwt::parse_jwks(&jwks)
                    .map_err(|e| ApiError::internal(format!("stored JWKS of {client_id}: {e}")))
            })?;
        let now_s = self.now_ms() / 1000;
        let claims = match medvault_auth::jwt::verify_client_assertion(assertion, &keys, &client_id, audience, now_s) {
            Ok(claims) => claims,
            Err(error) => {
                tracing::warn!(target: "medvault::security", client = %client_id, %error, "client assertion refused");
                return refuse(401, "invalid_client", "the client assertion was not accepted");
            }
        };
        if !self.store.use_assertion_id(&client_id, &claims.jti, claims.exp.saturating_mul(1000))? {
            tracing::warn!(target: "medvault::security", client = %client_id, "client assertion replayed: refused");
            return refuse(401, "invalid_client", "the client assertion was already used");
        }
        let scopes = match field("scope") {
            Some(requested) => match ScopeSet::parse(requested) {
                Ok(requested) => {
                    let granted = ScopeSet::parse(&client.scopes).map_err(|e| ApiError::internal(e.to_string()))?;
                    requested.narrow(&granted).to_string()
                }
                Err(error) => return refuse(400, "invalid_scope", &error.to_string()),
            },
            None => client.scopes.clone(),
        };
        let expires_ms = self.now_ms() + BACKEND_TOKEN_LIFETIME_MS;
        let token = self.store.create_service_token(&client_id, &scopes, Some(expires_ms))?;
        tracing::info!(target: "medvault::security", client = %client_id, %scopes, "backend access token issued");
        Ok((
            200,
            serde_json::json!({
                "access_token": token.as_str(),
                "token_type": "bearer",
                "expires_in": BACKEND_TOKEN_LIFETIME_MS / 1000,
                "scope": scopes,
            }),
        ))
    }

    pub fn logout(&self, principal: &Principal) -> Result<(), ApiError> {
        let digest = principal.session.ok_or_else(|| ApiError::bad_request("only a login session can log out"))?;
        self.store.end_session(digest)?;
        self.audit(
            medvault_audit::EventKind::Logout,
            &principal.client,
            principal.role.name(),
            principal.user_id,
            None,
            medvault_audit::Outcome::Success,
            "logout",
        );
        if let Ok(mut activity) = self.activity.lock() {
            activity.remove(&digest);
        }
        Ok(())
    }

    /// Opens break-glass access to one patient for the configured time, raising an alert.
    pub fn break_glass(&self, principal: &Principal, patient_id: &str, reason: &str) -> Result<(i64, i64), ApiError> {
        if principal.role != Role::Clinician {
            return Err(ApiError::forbidden("break-glass access is for clinicians"));
        }
        let user_id = principal.user_id.ok_or_else(|| ApiError::internal("a clinician without an account"))?;
        let reason = reason.trim();
        if reason.chars().count() < 10 || reason.len() > 1000 {
            return Err(ApiError::bad_request("give the emergency's reason, 10 to 1000 characters"));
        }
        if !medvault_fhir::is_valid_id(patient_id) {
            return Err(ApiError::bad_request("the patient id is not a valid FHIR id"));
        }
        match self.store.read("Patient", patient_id)? {
            Some(version) if !version.deleted => {}
            _ => return Err(ApiError::not_found(format!("Patient/{patient_id} does not exist"))),
        }
        let expires_ms = self.now_ms() + self.config.break_glass_ms;
        // The grant and its audit record: if the record cannot be written, no grant.
        let agent = medvault_audit::Agent {
            name: principal.client.clone(),
            role: principal.role.name().to_string(),
            user_id: Some(user_id),
            purpose_of_use: Some("BTG".into()),
            address: None,
        };
        let mut record = medvault_audit::AuditRecord::new(
            self.now_ms(),
            medvault_audit::EventKind::BreakGlass,
            agent,
            "break-glass",
        );
        record.patients = vec![patient_id.to_string()];
        record.entities = vec![format!("Patient/{patient_id}")];
        self.auditor.commit_blocking(vec![record])?;
        let grant = self.store.create_break_glass(user_id, patient_id, reason, expires_ms)?;
        tracing::warn!(
            target: "medvault::alert",
            alert = "break-glass",
            user = %principal.client,
            grant,
            "break-glass access opened; it awaits an auditor's review"
        );
        Ok((grant, expires_ms))
    }
}

/// Access tokens issued to backend services live five minutes (SMART Backend Services).
pub const BACKEND_TOKEN_LIFETIME_MS: i64 = 5 * 60_000;

/// The `iss` of a compact JWS, without verifying anything.
fn unverified_issuer(assertion: &str) -> Option<String> {
    use base64::Engine as _;
    if assertion.len() > medvault_auth::jwt::ASSERTION_BYTES_MAX {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().filter(|iss| !iss.is_empty() && iss.len() <= 128).map(str::to_string)
}

fn account_attempts(user: &UserRecord) -> AccountAttempts {
    AccountAttempts { consecutive_failures: user.failures, last_failure_ms: user.last_failure_ms, locked: user.locked }
}

fn gate_to_result(gate: Gate, what: &str) -> Result<(), ApiError> {
    match gate {
        Gate::Open => Ok(()),
        Gate::Wait { retry_after_ms } => {
            let seconds = u64::try_from((retry_after_ms + 999) / 1000).unwrap_or(1).max(1);
            Err(ApiError {
                retry_after_s: Some(seconds),
                ..ApiError::new(429, "throttled", format!("{what}; try again in {seconds} s"))
            })
        }
        Gate::Locked => Err(ApiError::new(
            429,
            "lock-error",
            format!("{what}: the account is locked until an administrator unlocks it"),
        )),
    }
}

/// The scopes a login asks for, narrowed to what the account was granted.
fn narrow_scopes(requested: &str, granted: &str) -> Result<String, ApiError> {
    let requested = ScopeSet::parse(requested).map_err(|e| ApiError::bad_request(format!("scope: {e}")))?;
    let granted = ScopeSet::parse(granted).map_err(|e| ApiError::internal(format!("granted scopes: {e}")))?;
    Ok(requested.narrow(&granted).to_string())
}

/// `Practitioner/123` → ("Practitioner", "123").
pub fn split_reference(reference: &str) -> Option<(String, String)> {
    medvault_fhir::parse_relative_reference(reference).map(|(t, id)| (t.to_string(), id.to_string()))
}
