//! Parsing untrusted JSON with limits: size, nesting depth and string length are checked
//! on the raw bytes before any tree is built, so hostile input cannot exhaust the stack or
//! memory.

use medvault_base::limits::{JSON_DEPTH_MAX, STRING_BYTES_MAX};
use serde_json::Value;

use crate::error::ApiError;

/// Parses a request body into a JSON value, or a 400/413 with a clear reason.
pub fn parse_body(bytes: &[u8], bytes_max: usize) -> Result<Value, ApiError> {
    if bytes.len() > bytes_max {
        return Err(ApiError::new(
            413,
            "too-long",
            format!("the body is {} bytes; the limit is {bytes_max}", bytes.len()),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(400, "structure", "the request body is empty; a JSON resource is required"));
    }
    check_shape(bytes)?;
    serde_json::from_slice(bytes).map_err(|error| {
        let what = if std::str::from_utf8(bytes).is_err() {
            "the body is not valid UTF-8"
        } else {
            "the body is not valid JSON"
        };
        ApiError::new(400, "structure", format!("{what}: {error}"))
    })
}

/// One pass over the bytes: nesting depth and string lengths, ignoring brackets in strings.
fn check_shape(bytes: &[u8]) -> Result<(), ApiError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0usize;
    for (index, &byte) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
                if index - string_start > STRING_BYTES_MAX {
                    return Err(ApiError::new(
                        413,
                        "too-long",
                        format!("a string value is longer than the limit of {STRING_BYTES_MAX} bytes"),
                    ));
                }
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                string_start = index;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > JSON_DEPTH_MAX {
                    return Err(ApiError::new(
                        400,
                        "structure",
                        format!("the JSON is nested deeper than the limit of {JSON_DEPTH_MAX} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_deep_long_empty_and_malformed_input() {
        let deep = format!("{}{}", "[".repeat(JSON_DEPTH_MAX + 1), "]".repeat(JSON_DEPTH_MAX + 1));
        assert_eq!(parse_body(deep.as_bytes(), 1 << 20).map_err(|e| e.status).err(), Some(400));
        let ok_depth = format!("{}{}", "[".repeat(JSON_DEPTH_MAX), "]".repeat(JSON_DEPTH_MAX));
        assert!(parse_body(ok_depth.as_bytes(), 1 << 20).is_ok());
        let brackets_in_string = format!("{{\"a\":\"{}\"}}", "[".repeat(200));
        assert!(parse_body(brackets_in_string.as_bytes(), 1 << 20).is_ok());
        assert_eq!(parse_body(b"  ", 10).map_err(|e| e.status).err(), Some(400));
        assert_eq!(parse_body(b"{\"a\":", 10).map_err(|e| e.status).err(), Some(400));
        assert_eq!(
            parse_body(b"{\"a\":\"\xff\"}", 100)
                .map_err(|e| e.issues[0].diagnostics.clone())
                .err()
                .map(|d| d.contains("UTF-8")),
            Some(true)
        );
        assert_eq!(parse_body(&[b' '; 11], 10).map_err(|e| e.status).err(), Some(413));
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(STRING_BYTES_MAX + 1));
        assert_eq!(parse_body(long.as_bytes(), usize::MAX).map_err(|e| e.status).err(), Some(413));
    }
}
