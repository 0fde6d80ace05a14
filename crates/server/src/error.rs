//! The one place where errors become HTTP statuses and `OperationOutcome`s. Internal detail
//! goes to the log under the request id; the client gets a clear, safe message.

use medvault_fhir::outcome::Issue;
use medvault_store::{StoreError, WriteError};

/// An error that reaches a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub issues: Vec<Issue>,
    /// Logged, never sent.
    pub internal: Option<String>,
    /// Logged as a security event (integrity failure, refused access).
    pub security_event: bool,
    /// Seconds for a `Retry-After` header (throttled logins).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            issues: vec![Issue::error(code, diagnostics)],
            internal: None,
            security_event: false,
            retry_after_s: None,
        }
    }

    pub fn with_issues(status: u16, issues: Vec<Issue>) -> Self {
        Self { status, issues, internal: None, security_event: false, retry_after_s: None }
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(400, "invalid", diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(404, "not-found", diagnostics)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "login", "a valid bearer access token is required (Authorization: Bearer <token>)")
    }

    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self { security_event: true, ..Self::new(403, "forbidden", diagnostics) }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            internal: Some(detail.into()),
            ..Self::new(500, "exception", "internal error; the server log has the details under this request's id")
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            internal: Some(detail.into()),
            ..Self::new(503, "transient", "the store cannot take this request now; try again")
        }
    }

    /// Prefixes every issue's location, e.g. with `Bundle.entry[3]`.
    pub fn located(mut self, prefix: &str) -> Self {
        for issue in &mut self.issues {
            if issue.expression.is_empty() {
                issue.expression.push(prefix.to_string());
            }
            issue.diagnostics = format!("{prefix}: {}", issue.diagnostics);
        }
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Integrity(detail) => Self {
                status: 500,
                issues: vec![Issue::error(
                    "exception",
                    "integrity failure: the stored record failed its authenticity check and was not returned; \
                     the incident has been logged",
                )],
                internal: Some(detail.clone()),
                security_event: true,
                retry_after_s: None,
            },
            StoreError::Missing(what) => Self::not_found(format!("{what} does not exist")),
            StoreError::Conflict(what) => Self::new(409, "duplicate", what.clone()),
            StoreError::KeyDestroyed => {
                Self::new(410, "deleted", "this record was erased (its data key was destroyed)")
            }
            StoreError::Closed | StoreError::Io(_) | StoreError::Poisoned => Self::unavailable(error.to_string()),
            StoreError::SearchUnavailable(message) => Self::new(503, "transient", message.clone()),
            StoreError::SearchRefused(message) => Self::new(400, "too-costly", message.clone()),
            _ => Self::internal(error.to_string()),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::PreconditionFailed { expected, current, .. } => Self::new(
                412,
                "conflict",
                format!(
                    "If-Match names version {expected} but the current version is {}",
                    current.map_or("none (the resource does not exist)".to_string(), |v| v.to_string())
                ),
            ),
            WriteError::AlreadyExists { .. } => Self::new(409, "duplicate", "a resource with this id already exists"),
            WriteError::Duplicate { .. } => {
                Self::bad_request("the same resource appears more than once in the transaction")
            }
            WriteError::Contended => {
                Self::new(409, "conflict", "the resource is being changed by other requests; try again")
            }
            WriteError::Store(store) => store.into(),
        }
    }
}
