//! Stamping a resource with its id and version metadata before sealing, and reading those
//! back after opening (the "check twice" of the write path).

use serde_json::Value;

/// The fields that tie a sealed body to its row.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub version_id: &'a str,
}

/// Reads the head that [`stamp`] and [`tombstone`] write first, without parsing the rest:
/// `{"resourceType":"T","id":"I","meta":{"versionId":"V",`. Types, ids and version ids
/// never contain quotes or escapes, so anything else is not a body this store wrote.
pub fn parse_head(json: &[u8]) -> Option<Head<'_>> {
    let text = std::str::from_utf8(json.get(..json.len().min(256))?).ok()?;
    let rest = text.strip_prefix("{\"resourceType\":\"")?;
    let (resource_type, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(",\"id\":\"")?;
    let (id, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(",\"meta\":{\"versionId\":\"")?;
    let (version_id, rest) = rest.split_once('"')?;
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
    (plain(resource_type) && plain(id) && plain(version_id) && rest.starts_with(',')).then_some(Head {
        resource_type,
        id,
        version_id,
    })
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
        assert_eq!(head, Head { resource_type: "Patient", id: "server-id", version_id: "3" });
        let tombstone = tombstone("Patient", "x", 4, 0);
        assert_eq!(parse_head(&tombstone).map(|h| h.version_id), Some("4"));
        let bad: [&[u8]; 4] = [
            br#"{"id":"x","resourceType":"Patient"}"#,
            br#"{"resourceType":"Pa\"t","id":"x","meta":{"versionId":"1","#,
            b"",
            b"\xff",
        ];
        for bytes in bad {
            assert_eq!(parse_head(bytes), None);
        }
    }
}
