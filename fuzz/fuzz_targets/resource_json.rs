//! Untrusted bytes → JSON (with medvault's limits) → FHIR resource validation: must never
//! panic, loop or exhaust memory, whatever the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = medvault_server::json::parse_body(data, 1 << 20) {
        let resource_type = value.get("resourceType").and_then(|v| v.as_str()).unwrap_or("Patient").to_string();
        let _ = medvault_server::service::validate(&value, &resource_type);
    }
});
