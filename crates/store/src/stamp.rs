//! Stamping a resource with its id and version metadata before sealing, and reading those
//! back after opening (the "check twice" of the write path).

use serde::Deserialize;
use serde_json::Value;

/// The fields that tie a sealed body to its row.
#[derive(Debug, Deserialize)]
pub struct Head {
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    pub id: String,
    #[serde(rename = "meta", deserialize_with = "version_id")]
    pub version_id: String,
}

fn version_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    struct Meta {
        #[serde(rename = "versionId")]
        version_id: String,
    }
    Ok(Meta::deserialize(deserializer)?.version_id)
}

pub fn parse_head(json: &[u8]) -> Option<Head> {
    serde_json::from_slice(json).ok()
}

/// The resource as stored and served: `resourceType`, `id`, `meta` (with `versionId` and
/// `lastUpdated` set by the server, the client's other meta kept), then the client's fields
/// in their order. Written straight to bytes, without copying the resource. `None` if
/// `resource` is not an object with a `resourceType`.
pub fn stamp(resource: &Value, id: &str, version: u64, recorded_ms: i64) -> Option<Vec<u8>> {
    let object = resource.as_object()?;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"resourceType\":");
    serde_json::to_writer(&mut out, object.get("resourceType")?).ok()?;
    out.extend_from_slice(b",\"id\":");
    serde_json::to_writer(&mut out, id).ok()?;
    out.extend_from_slice(b",\"meta\":{\"versionId\":\"");
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(b"\",\"lastUpdated\":\"");
    out.extend_from_slice(medvault_base::time::format_instant(recorded_ms).as_bytes());
    out.push(b'"');
    if let Some(Value::Object(client_meta)) = object.get("meta") {
        for (name, value) in client_meta {
            if name != "versionId" && name != "lastUpdated" {
                write_member(&mut out, name, value)?;
            }
        }
    }
    out.push(b'}');
    for (name, value) in object {
        if !matches!(name.as_str(), "resourceType" | "id" | "meta") {
            write_member(&mut out, name, value)?;
        }
    }
    out.push(b'}');
    Some(out)
}

fn write_member(out: &mut Vec<u8>, name: &str, value: &Value) -> Option<()> {
    out.push(b',');
    serde_json::to_writer(&mut *out, name).ok()?;
    out.push(b':');
    serde_json::to_writer(&mut *out, value).ok()
}

/// The sealed body of a deletion: enough to name what was deleted, nothing more.
pub fn tombstone(resource_type: &str, id: &str, version: u64, recorded_ms: i64) -> Vec<u8> {
    let tombstone = serde_json::json!({
        "resourceType": resource_type,
        "id": id,
        "meta": { "versionId": version.to_string(), "lastUpdated": medvault_base::time::format_instant(recorded_ms) }
    });
    serde_json::to_vec(&tombstone).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_orders_fields_and_keeps_client_meta() {
        let resource = serde_json::json!({
            "gender": "female", "resourceType": "Patient", "id": "client-id",
            "meta": {"versionId": "99", "profile": ["http://example.org/p"]}, "birthDate": "1980-07-10"
        });
        let json = stamp(&resource, "server-id", 3, 0).expect("object");
        let text = String::from_utf8(json.clone()).expect("utf8");
        assert!(text.starts_with(r#"{"resourceType":"Patient","id":"server-id","meta":{"versionId":"3","lastUpdated":"1970-01-01T00:00:00.000Z","profile":["http://example.org/p"]}"#), "{text}");
        assert!(text.ends_with(r#""gender":"female","birthDate":"1980-07-10"}"#), "{text}");
        let head = parse_head(&json).expect("head");
        assert_eq!(
            (head.resource_type.as_str(), head.id.as_str(), head.version_id.as_str()),
            ("Patient", "server-id", "3")
        );
        let tombstone = tombstone("Patient", "x", 4, 0);
        assert_eq!(parse_head(&tombstone).map(|h| h.version_id), Some("4".to_string()));
    }
}
