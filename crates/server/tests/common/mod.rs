//! An in-process server over a fresh store, driven through the router without a socket.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_server::http::{router, AppState, HttpConfig};
use medvault_server::Service;
use medvault_store::Store;
use medvault_testkit::TempDir;
use tower::ServiceExt;

pub struct TestServer {
    pub dir: TempDir,
    pub store: Arc<Store>,
    pub app: axum::Router,
    pub clinician: String,
    pub admin: String,
}

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
        let dir = TempDir::new("http");
        let key = dir.path().join("master.key");
        MasterKey::generate().expect("random").create_key_file(&key).expect("key file");
        let store = Arc::new(
            Store::create(&dir.path().join("data"), &KeyFile { path: key }, Arc::new(medvault_base::SystemClock))
                .expect("store"),
        );
        let clinician = store.create_token("test-clinician", "clinician", None).expect("token").to_string();
        let admin = store.create_token("test-admin", "administrator", None).expect("token").to_string();
        let config = HttpConfig { scheme: "http", fallback_authority: "127.0.0.1:8080".into(), public_base: None };
        let app = router(AppState::new(Service::new(store.clone()), config));
        Self { dir, store, app, clinician, admin }
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
