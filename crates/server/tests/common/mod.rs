//! An in-process server over a fresh store, driven through the router without a socket.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_server::accounts::{create_account, NewAccount};
use medvault_server::auth::Role;
use medvault_server::http::{router, AppState, HttpConfig};
use medvault_server::login::{AuthConfig, LoginStep, SecondFactor};
use medvault_server::Service;
use medvault_store::Store;
use medvault_testkit::TempDir;
use tower::ServiceExt;

pub struct TestServer {
    pub dir: TempDir,
    pub store: Arc<Store>,
    pub state: Arc<AppState>,
    pub app: axum::Router,
    /// A service client with `system/*.cruds`: every patient, every interaction.
    pub clinician: String,
    /// A logged-in administrator's session.
    pub admin: String,
}

/// A password every test account uses; long and random-looking enough for the policy.
pub const TEST_PASSWORD: &str = "quartz-lantern-97-orbit-mosaic";

pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({}): {e}: {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first issue's code and diagnostics of an OperationOutcome body.
    pub fn outcome(&self) -> (String, String) {
        let json = self.json();
        assert_eq!(json["resourceType"], "OperationOutcome", "{json}");
        (
            json["issue"][0]["code"].as_str().unwrap_or_default().to_string(),
            json["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_string(),
        )
    }
}

impl TestServer {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(medvault_base::SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn medvault_base::Clock>) -> Self {
        Self::build(clock, false)
    }

    /// A server that locks down on mass modification (`serve --lockdown-on-mass-modification`).
    pub fn with_lockdown(clock: Arc<dyn medvault_base::Clock>) -> Self {
        Self::build(clock, true)
    }

    fn build(clock: Arc<dyn medvault_base::Clock>, lockdown: bool) -> Self {
        let dir = TempDir::new("http");
        let key = dir.path().join("master.key");
        MasterKey::generate().expect("random").create_key_file(&key).expect("key file");
        let store = Arc::new(Store::create(&dir.path().join("data"), &KeyFile { path: key }, clock).expect("store"));
        let clinician =
            store.create_service_token("test-clinician", "system/*.cruds", None).expect("token").to_string();
        let config = HttpConfig { scheme: "http", fallback_authority: "127.0.0.1:8080".into(), public_base: None };
        let state = if lockdown {
            AppState::with_alerts(Service::new(store.clone()), config, None, true)
        } else {
            AppState::with_auth(Service::new(store.clone()), config, AuthConfig::default())
        };
        let app = router(state.clone());
        let mut server = Self { dir, store, state, app, clinician, admin: String::new() };
        server.admin = server.session("test-admin", Role::Administrator, None, None);
        server
    }

    /// Creates an account and logs it in (password, then TOTP) through the real login
    /// flow; returns the session token.
    pub fn session(&self, username: &str, role: Role, fhir_user: Option<&str>, scopes: Option<&str>) -> String {
        let account = NewAccount { username, role, password: TEST_PASSWORD, fhir_user, scopes, mfa: true };
        let (_, enrolment) = create_account(&self.store, self.state.auth.config().password, &account)
            .unwrap_or_else(|e| panic!("create {username}: {:?}", e.issues));
        let enrolment = enrolment.expect("an enrolment");
        let address = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let ticket = match self.state.auth.login(username, TEST_PASSWORD, None, address).expect("password accepted") {
            LoginStep::SecondFactor { ticket, .. } => ticket,
            LoginStep::Session(_) => panic!("MFA was skipped"),
        };
        let code = totp_now(&enrolment.secret_base32, self.store.clock().as_ref());
        let session = self
            .state
            .auth
            .second_factor(&ticket, SecondFactor::Totp(&code), address)
            .unwrap_or_else(|e| panic!("second factor of {username}: {:?}", e.issues));
        session.token.to_string()
    }

    pub async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
        let mut request = Request::builder().method(method).uri(uri).header("host", "fhir.example.org:8443");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.map(Body::from).unwrap_or_else(Body::empty)).expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// With `token`, with a JSON body.
    pub async fn call_as(&self, token: &str, method: &str, uri: &str, body: Option<serde_json::Value>) -> Reply {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/fhir+json"));
        }
        self.send(method, uri, &headers, body.map(|b| serde_json::to_vec(&b).expect("json"))).await
    }

    /// As the clinician, with a JSON body.
    pub async fn call(&self, method: &str, uri: &str, body: Option<serde_json::Value>) -> Reply {
        let auth = format!("Bearer {}", self.clinician);
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/fhir+json"));
        }
        self.send(method, uri, &headers, body.map(|b| serde_json::to_vec(&b).expect("json"))).await
    }
}

/// The TOTP code of a base32 secret at the clock's time.
pub fn totp_now(secret_base32: &str, clock: &dyn medvault_base::Clock) -> String {
    let totp = medvault_auth::totp::Totp::from_base32(secret_base32, medvault_auth::totp::TotpAlgorithm::Sha1, 6, 30)
        .expect("secret");
    totp.code_at(u64::try_from(clock.now_ms() / 1000).expect("time"))
}
