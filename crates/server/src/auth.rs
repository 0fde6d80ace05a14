//! Who is calling, and what they may do. Today: bearer access tokens with one role each.
//! The passwords, MFA, sessions and care-team policies of the authentication issue grow
//! here, behind the same two values: a [`Principal`] from authentication, and a
//! [`ClinicalAccess`] that only [`authorize_clinical`] can make and that every
//! clinical-data interaction of [`crate::service`] requires.

use medvault_store::Store;

use crate::error::ApiError;

/// The roles a token can carry. An administrator is not a reader of clinical data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Administrator,
    Clinician,
    Service,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Administrator, Role::Clinician, Role::Service, Role::Auditor];

    pub fn name(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Clinician => "clinician",
            Role::Service => "service",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }

    pub fn reads_clinical_data(self) -> bool {
        matches!(self, Role::Clinician | Role::Service)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub client: String,
    pub role: Role,
}

/// Proof that the caller may read and write clinical data. Only [`authorize_clinical`] and
/// [`ClinicalAccess::local_operator`] make one.
#[derive(Debug, Clone)]
pub struct ClinicalAccess {
    principal: Principal,
}

impl ClinicalAccess {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The operator at the console (import from the command line): whoever can open the
    /// store's master key already holds every record.
    pub fn local_operator(name: &str) -> Self {
        Self { principal: Principal { client: format!("local:{name}"), role: Role::Service } }
    }
}

/// Checks a bearer token against the store. Unknown, revoked and expired tokens all get
/// the same answer.
pub fn authenticate(store: &Store, authorization: Option<&str>) -> Result<Principal, ApiError> {
    let token = authorization
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|token| !token.is_empty() && token.len() <= 256)
        .ok_or_else(ApiError::unauthorized)?;
    let row = store.authenticate_token(token)?.ok_or_else(ApiError::unauthorized)?;
    let role = Role::parse(&row.role)
        .ok_or_else(|| ApiError::internal(format!("token of {} has unknown role", row.client)))?;
    Ok(Principal { client: row.client, role })
}

pub fn authorize_clinical(principal: &Principal) -> Result<ClinicalAccess, ApiError> {
    if principal.role.reads_clinical_data() {
        Ok(ClinicalAccess { principal: principal.clone() })
    } else {
        Err(ApiError::forbidden(format!("the {} role does not give access to clinical data", principal.role.name())))
    }
}
