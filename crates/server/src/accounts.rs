//! Account administration, shared by the admin HTTP API and the `medvault user`
//! commands: the rules an account must meet, and the enrolment of its second factor.

use medvault_auth::password::{self, PasswordParams};
use medvault_auth::scope::{ScopeContext, ScopeSet};
use medvault_auth::totp::Totp;
use medvault_base::limits::USERNAME_BYTES_MAX;
use medvault_crypto::Secret32;
use medvault_store::accounts::{NewUser, UserRecord};
use medvault_store::Store;
use zeroize::Zeroizing;

use crate::auth::Role;
use crate::error::ApiError;

/// What an authenticator app needs, shown once: the secret, its `otpauth://` URI and the
/// one-time recovery codes.
pub struct Enrolment {
    pub secret_base32: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
    pub recovery_codes: Vec<Zeroizing<String>>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment { .. }")
    }
}

/// A new account as requested.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub role: Role,
    pub password: &'a str,
    /// `Practitioner/{id}` (clinicians, optional) or `Patient/{id}` (patients, required).
    pub fhir_user: Option<&'a str>,
    /// SMART scopes; the role's defaults when `None`.
    pub scopes: Option<&'a str>,
    /// Only auditors (who read no clinical data) may go without a second factor, and then
    /// need a 15-character password.
    pub mfa: bool,
}

/// The issuer name authenticator apps show.
pub const TOTP_ISSUER: &str = "medvault";

pub fn create_account(
    store: &Store,
    params: PasswordParams,
    account: &NewAccount<'_>,
) -> Result<(i64, Option<Enrolment>), ApiError> {
    check_username(account.username)?;
    let role = account.role;
    if role == Role::Service {
        return Err(ApiError::bad_request(
            "service clients are not accounts: make one with `medvault token create` (or POST /admin/clients)",
        ));
    }
    if !account.mfa && role != Role::Auditor {
        return Err(ApiError::bad_request(format!(
            "a second factor is mandatory for the {} role (it reads clinical data or administers); \
             only auditors may go without",
            role.name()
        )));
    }
    let fhir_user = check_fhir_user(role, account.fhir_user)?;
    let scopes = check_scopes(role, account.scopes.unwrap_or(role.default_scopes()))?;
    password::check_new_password(account.password, account.mfa, &[account.username])
        .map_err(|rejected| ApiError::new(400, "invalid", format!("password refused: {}", rejected.reason)))?;
    let hash = password::hash_password(account.password, params).map_err(|e| ApiError::internal(e.to_string()))?;
    let (secret, enrolment, digests) = if account.mfa {
        let (secret, enrolment, digests) = new_enrolment(account.username)?;
        (Some(secret), Some(enrolment), digests)
    } else {
        (None, None, Vec::new())
    };
    let user_id = store.create_user(NewUser {
        username: account.username.to_string(),
        role: role.name().to_string(),
        fhir_user,
        scopes,
        password: hash,
        mfa_required: account.mfa,
        totp_secret: secret,
        recovery_digests: digests,
    })?;
    Ok((user_id, enrolment))
}

/// A fresh TOTP secret and recovery codes for a user (old ones stop working; sessions end).
pub fn reset_mfa(store: &Store, user: &UserRecord) -> Result<Enrolment, ApiError> {
    if !user.mfa_required {
        return Err(ApiError::bad_request(format!("{} has no second factor to reset", user.username)));
    }
    let (secret, enrolment, digests) = new_enrolment(&user.username)?;
    store.reset_mfa(user.user_id, &secret, digests)?;
    tracing::warn!(target: "medvault::security", user = %user.username, "second factor reset; sessions ended");
    Ok(enrolment)
}

pub fn set_password(
    store: &Store,
    params: PasswordParams,
    user: &UserRecord,
    new_password: &str,
) -> Result<(), ApiError> {
    password::check_new_password(new_password, user.mfa_required, &[&user.username])
        .map_err(|rejected| ApiError::new(400, "invalid", format!("password refused: {}", rejected.reason)))?;
    let hash = password::hash_password(new_password, params).map_err(|e| ApiError::internal(e.to_string()))?;
    store.set_password(user.user_id, hash)?;
    store.revoke_user_sessions(user.user_id)?;
    tracing::warn!(target: "medvault::security", user = %user.username, "password changed; sessions ended");
    Ok(())
}

pub fn user(store: &Store, username: &str) -> Result<UserRecord, ApiError> {
    store.user_by_name(username)?.ok_or_else(|| ApiError::not_found(format!("there is no user named '{username}'")))
}

fn new_enrolment(username: &str) -> Result<(Secret32, Enrolment, Vec<[u8; 32]>), ApiError> {
    let secret = Secret32::random().map_err(|e| ApiError::internal(e.to_string()))?;
    let totp = Totp::new(secret.expose_secret().to_vec(), medvault_auth::totp::TotpAlgorithm::Sha1, 6, 30)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let codes = medvault_auth::recovery::generate_recovery_codes(medvault_auth::recovery::RECOVERY_CODES)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let digests = codes.iter().map(|code| medvault_auth::recovery::recovery_code_digest(code)).collect();
    let enrolment = Enrolment {
        secret_base32: Zeroizing::new(totp.secret_base32()),
        otpauth_uri: Zeroizing::new(totp.otpauth_uri(TOTP_ISSUER, username)),
        recovery_codes: codes.into_iter().map(Zeroizing::new).collect(),
    };
    Ok((secret, enrolment, digests))
}

/// 1 to 64 bytes of lowercase letters, digits and `. _ - @`, starting with a letter or digit.
pub fn check_username(username: &str) -> Result<(), ApiError> {
    let valid = !username.is_empty()
        && username.len() <= USERNAME_BYTES_MAX
        && username.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && username.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "a user name is 1 to {USERNAME_BYTES_MAX} of a-z 0-9 . _ - @, starting with a letter or digit"
        )))
    }
}

fn check_fhir_user(role: Role, fhir_user: Option<&str>) -> Result<Option<String>, ApiError> {
    let parsed = fhir_user
        .map(|reference| {
            crate::login::split_reference(reference).ok_or_else(|| {
                ApiError::bad_request(format!("'{reference}' is not a reference such as Practitioner/123"))
            })
        })
        .transpose()?;
    match (role, parsed) {
        (Role::Clinician, None) => Ok(None),
        (Role::Clinician, Some((t, id))) if t == "Practitioner" => Ok(Some(format!("Practitioner/{id}"))),
        (Role::Patient, Some((t, id))) if t == "Patient" => Ok(Some(format!("Patient/{id}"))),
        (Role::Patient, _) => Err(ApiError::bad_request("a patient account must name its record: Patient/<id>")),
        (Role::Clinician, Some(_)) => Err(ApiError::bad_request("a clinician is a Practitioner/<id>")),
        (_, None) => Ok(None),
        (role, Some(_)) => {
            Err(ApiError::bad_request(format!("the {} role is not linked to a FHIR resource", role.name())))
        }
    }
}

/// Parses scopes and checks they fit the role: `user/` for clinicians, `patient/` (or
/// `user/`) for patients, `system/` for service clients, none for administrators and
/// auditors (they read no clinical data), and only real resource types.
pub fn check_scopes(role: Role, scopes: &str) -> Result<String, ApiError> {
    let parsed = ScopeSet::parse(scopes).map_err(|e| ApiError::bad_request(format!("scope: {e}")))?;
    if let Some(other) = parsed.other_scopes().first() {
        return Err(ApiError::bad_request(format!(
            "'{other}' is not a SMART resource scope such as system/Observation.rs or user/*.cruds"
        )));
    }
    for scope in parsed.resource_scopes() {
        let fits = match role {
            Role::Clinician => scope.context == ScopeContext::User,
            Role::Patient => matches!(scope.context, ScopeContext::Patient | ScopeContext::User),
            Role::Service => scope.context == ScopeContext::System,
            Role::Administrator | Role::Auditor => false,
        };
        if !fits {
            return Err(ApiError::bad_request(format!(
                "the scope '{scope}' does not fit the {} role (clinicians: user/…, patients: patient/…, \
                 service clients: system/…, administrators and auditors: none)",
                role.name()
            )));
        }
        if let Some(resource_type) = &scope.resource_type {
            if !medvault_fhir::is_resource_type(resource_type) {
                return Err(ApiError::bad_request(format!("the scope '{scope}' names no FHIR R4 resource type")));
            }
        }
    }
    Ok(parsed.to_string())
}
