//! SMART Backend Services client assertions: RFC 7523 `private_key_jwt` verification.
//!
//! A backend client registers its public key (a JWK, or a JWKS of several) and then asks
//! for tokens with a short-lived JWT signed by its private key. This module checks such an
//! assertion against the registered keys, strictly and in this order:
//!
//! 1. size ([`ASSERTION_BYTES_MAX`]), then shape: three parts of unpadded base64url
//!    (padding and non-canonical trailing bits are refused);
//! 2. the header: `alg` is `ES256` or `RS384` and nothing else (`none`, `HS256` and the
//!    rest are refused before any key is looked at, which closes the "public key as HMAC
//!    secret" and "unsigned token" attacks); `typ`, if present, is `JWT`; no `crit`
//!    (no extension is understood); `jku`, `x5u`, `jwk` and `x5c` are ignored, never
//!    fetched or trusted, since the key must come from registration;
//! 3. the key: `kid` selects it when present, otherwise every registered key of the
//!    algorithm's type is tried; the algorithm must match the key's type;
//! 4. the signature (ES256: P-256 with a fixed 64-byte `r‖s` signature; RS384: PKCS#1
//!    v1.5 with SHA-384 and a 2048- to 8192-bit modulus), before any claim is read;
//! 5. the claims: `iss` = `sub` = the client id; `aud` is (or contains) the token
//!    endpoint's URL; `exp` in the future but at most [`ASSERTION_LIFETIME_MAX_S`] ahead;
//!    `nbf` and `iat`, if present, not later than [`ASSERTION_CLOCK_SKEW_S`] ahead; `jti`
//!    of 1 to [`JTI_BYTES_MAX`] bytes.
//!
//! JSON objects with a repeated member are refused (two parsers could read different
//! values). Replay is the caller's check: it remembers each accepted `jti` until `exp`.
//!
//! Errors say precisely what failed, for the server's log, and never include the assertion
//! or its signature; values taken from it (`alg`, `kid`) are shortened and made printable.

use std::fmt;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Most bytes of an assertion: several times a real one (an RS384 assertion with a 4096-
/// bit key is about 1 KiB), small enough to refuse junk before decoding it.
pub const ASSERTION_BYTES_MAX: usize = 8192;
/// Longest accepted lifetime: `exp` at most 5 minutes after now, as SMART Backend Services
/// requires ("no more than five minutes in the future").
pub const ASSERTION_LIFETIME_MAX_S: i64 = 300;
/// Tolerated clock difference for `nbf` and `iat` in the future.
pub const ASSERTION_CLOCK_SKEW_S: i64 = 60;
/// Most bytes of `jti`: the caller stores it for replay detection.
pub const JTI_BYTES_MAX: usize = 256;
/// Most bytes of a `kid`.
pub const KID_BYTES_MAX: usize = 256;
/// Most keys in a registered JWKS.
pub const JWKS_KEYS_MAX: usize = 16;
/// Smallest RSA modulus accepted (NIST SP 800-131A: 2048 bits).
pub const RSA_MODULUS_BITS_MIN: usize = 2048;
/// Largest RSA modulus accepted (ring's limit; bounds verification cost).
pub const RSA_MODULUS_BITS_MAX: usize = 8192;

/// JWK members that hold private key material, in any key type (`k` is a symmetric key).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const P256_COORDINATE_BYTES: usize = 32;
const ES256_SIGNATURE_BYTES: usize = 64;
/// Most characters of an attacker-chosen value (`alg`, `kid`) quoted in an error.
const QUOTED_CHARS_MAX: usize = 64;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A client's registered public key.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// An EC P-256 key, for `ES256`: the uncompressed point `04‖x‖y`.
    Es256 { kid: Option<String>, public_point: Vec<u8> },
    /// An RSA key of 2048 to 8192 bits, for `RS384`: big-endian modulus and exponent
    /// without leading zeros.
    Rs384 { kid: Option<String>, modulus: Vec<u8>, exponent: Vec<u8> },
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Es256 { kid, .. } => {
                f.debug_struct("ClientKey::Es256").field("kid", kid).finish_non_exhaustive()
            }
            ClientKey::Rs384 { kid, modulus, .. } => f
                .debug_struct("ClientKey::Rs384")
                .field("kid", kid)
                .field("modulus_bits", &bit_length(modulus))
                .finish_non_exhaustive(),
        }
    }
}

impl ClientKey {
    /// Parses a public JWK. Refuses keys with private members (`d`, `p`, `q`, `dp`, `dq`,
    /// `qi`, `oth`, `k`): a client registers only its public key, and a server that
    /// stores a private key would be a place to steal it from. Also refuses `use` other
    /// than `sig`, `key_ops` without `verify`, an `alg` that does not fit the key, EC
    /// curves other than P-256, and RSA moduli outside 2048..=8192 bits.
    ///
    /// The EC point is checked to be on the curve when it is first used to verify: ring
    /// offers no separate check, and an invalid point verifies nothing.
    pub fn from_jwk(jwk: &Value) -> Result<ClientKey, AssertionError> {
        let jwk = jwk.as_object().ok_or(AssertionError::Jwk("not a JSON object"))?;
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|member| jwk.contains_key(**member)) {
            return Err(AssertionError::PrivateKeyMember(member));
        }
        if let Some(key_use) = jwk.get("use") {
            if key_use.as_str() != Some("sig") {
                return Err(AssertionError::Jwk("use is not sig"));
            }
        }
        if let Some(key_ops) = jwk.get("key_ops") {
            let allows_verify =
                key_ops.as_array().is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !allows_verify {
                return Err(AssertionError::Jwk("key_ops does not include verify"));
            }
        }
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= KID_BYTES_MAX => Some(kid.clone()),
            Some(_) => return Err(AssertionError::Jwk("kid is not a string of 1 to 256 bytes")),
        };
        let declared_alg = match jwk.get("alg") {
            None => None,
            Some(Value::String(alg)) => Some(alg.as_str()),
            Some(_) => return Err(AssertionError::Jwk("alg is not a string")),
        };
        let member = |name: &'static str| -> Result<Vec<u8>, AssertionError> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or(AssertionError::JwkMember { member: name, reason: "missing or not a string" })?;
            B64URL
                .decode(text)
                .map_err(|_| AssertionError::JwkMember { member: name, reason: "not unpadded base64url" })
        };
        match jwk.get("kty").and_then(Value::as_str) {
            Some("EC") => {
                if declared_alg.is_some_and(|alg| alg != "ES256") {
                    return Err(AssertionError::Jwk("alg of an EC key must be ES256"));
                }
                if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                    return Err(AssertionError::UnsupportedKey("EC keys must be on curve P-256"));
                }
                let (x, y) = (member("x")?, member("y")?);
                if x.len() != P256_COORDINATE_BYTES || y.len() != P256_COORDINATE_BYTES {
                    return Err(AssertionError::Jwk("P-256 coordinates must be 32 bytes each"));
                }
                let mut public_point = Vec::with_capacity(1 + 2 * P256_COORDINATE_BYTES);
                public_point.push(0x04);
                public_point.extend_from_slice(&x);
                public_point.extend_from_slice(&y);
                Ok(ClientKey::Es256 { kid, public_point })
            }
            Some("RSA") => {
                if declared_alg.is_some_and(|alg| alg != "RS384") {
                    return Err(AssertionError::Jwk("alg of an RSA key must be RS384"));
                }
                let modulus = strip_leading_zeros(member("n")?);
                let exponent = strip_leading_zeros(member("e")?);
                let bits = bit_length(&modulus);
                if bits < RSA_MODULUS_BITS_MIN {
                    return Err(AssertionError::RsaKeyTooSmall { bits });
                }
                if bits > RSA_MODULUS_BITS_MAX {
                    return Err(AssertionError::UnsupportedKey("RSA modulus above 8192 bits"));
                }
                if !is_usable_rsa_exponent(&exponent) {
                    return Err(AssertionError::JwkMember {
                        member: "e",
                        reason: "must be odd, at least 3 and at most 33 bits",
                    });
                }
                Ok(ClientKey::Rs384 { kid, modulus, exponent })
            }
            Some(_) => Err(AssertionError::UnsupportedKey("kty must be EC or RSA")),
            None => Err(AssertionError::Jwk("kty missing")),
        }
    }

    pub fn kid(&self) -> Option<&str> {
        match self {
            ClientKey::Es256 { kid, .. } | ClientKey::Rs384 { kid, .. } => kid.as_deref(),
        }
    }

    /// The JWS `alg` this key verifies.
    pub fn algorithm(&self) -> &'static str {
        match self {
            ClientKey::Es256 { .. } => "ES256",
            ClientKey::Rs384 { .. } => "RS384",
        }
    }

    fn verify(&self, message: &[u8], signature_bytes: &[u8]) -> bool {
        match self {
            ClientKey::Es256 { public_point, .. } => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_point)
                    .verify(message, signature_bytes)
                    .is_ok()
            }
            ClientKey::Rs384 { modulus, exponent, .. } => {
                RsaPublicKeyComponents { n: modulus.as_slice(), e: exponent.as_slice() }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA384, message, signature_bytes)
                    .is_ok()
            }
        }
    }
}

/// Parses a JWKS (`{"keys": [...]}`) of at most [`JWKS_KEYS_MAX`] keys. Every key must be
/// acceptable: a set with a private key or a key this server cannot use is refused as a
/// whole, so a registration mistake is found at registration, not at the first login.
pub fn parse_jwks(jwks: &Value) -> Result<Vec<ClientKey>, AssertionError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(AssertionError::Jwk("a JWKS is an object with a keys array"))?;
    if keys.is_empty() {
        return Err(AssertionError::Jwk("the JWKS has no keys"));
    }
    if keys.len() > JWKS_KEYS_MAX {
        return Err(AssertionError::Jwk("the JWKS has more than 16 keys"));
    }
    keys.iter()
        .enumerate()
        .map(|(index, jwk)| {
            ClientKey::from_jwk(jwk).map_err(|source| AssertionError::JwksEntry { index, source: Box::new(source) })
        })
        .collect()
}

/// What a verified assertion says that the caller still needs: `jti` and `exp`, to
/// refuse a second use of the same assertion until it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionClaims {
    pub jti: String,
    pub exp: i64,
}

/// Verifies a client assertion (see the module documentation for every check) at time
/// `now_s` (Unix seconds), for `client_id` and the token endpoint URL `audience`.
pub fn verify_client_assertion(
    assertion: &str,
    keys: &[ClientKey],
    client_id: &str,
    audience: &str,
    now_s: i64,
) -> Result<AssertionClaims, AssertionError> {
    if assertion.len() > ASSERTION_BYTES_MAX {
        return Err(AssertionError::TooLarge { max: ASSERTION_BYTES_MAX });
    }
    let mut parts = assertion.split('.');
    let (Some(header_part), Some(payload_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed("not three dot-separated parts"));
    };
    let header = decode_object(header_part, "header")?;
    let algorithm = match header.get("alg") {
        Some(Value::String(alg)) if alg == "ES256" || alg == "RS384" => alg.as_str(),
        Some(Value::String(alg)) => {
            return Err(AssertionError::AlgorithmNotAllowed { alg: quoted(alg) });
        }
        Some(_) => return Err(AssertionError::Malformed("header alg is not a string")),
        None => return Err(AssertionError::Malformed("header has no alg")),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ == "JWT" => {}
        Some(_) => return Err(AssertionError::TypeNotAllowed),
    }
    if header.contains_key("crit") {
        return Err(AssertionError::CriticalHeader);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(AssertionError::Malformed("header kid is not a string")),
    };
    let signature_bytes =
        B64URL.decode(signature_part).map_err(|_| AssertionError::Malformed("signature is not unpadded base64url"))?;

    let candidates: Vec<&ClientKey> = match kid {
        Some(kid) => {
            let named: Vec<&ClientKey> = keys.iter().filter(|key| key.kid() == Some(kid)).collect();
            if named.is_empty() {
                return Err(AssertionError::UnknownKey { kid: quoted(kid) });
            }
            let matching: Vec<&ClientKey> = named.into_iter().filter(|key| key.algorithm() == algorithm).collect();
            if matching.is_empty() {
                return Err(AssertionError::KeyAlgorithmMismatch);
            }
            matching
        }
        None => keys.iter().filter(|key| key.algorithm() == algorithm).collect(),
    };
    if candidates.is_empty() {
        return Err(AssertionError::NoKeyForAlgorithm);
    }
    if algorithm == "ES256" && signature_bytes.len() != ES256_SIGNATURE_BYTES {
        return Err(AssertionError::BadSignature);
    }
    let signed = &assertion.as_bytes()[..header_part.len() + 1 + payload_part.len()];
    if !candidates.iter().any(|key| key.verify(signed, &signature_bytes)) {
        return Err(AssertionError::BadSignature);
    }

    let claims = decode_object(payload_part, "payload")?;
    check_claims(&claims, client_id, audience, now_s)
}

fn check_claims(
    claims: &Map<String, Value>,
    client_id: &str,
    audience: &str,
    now_s: i64,
) -> Result<AssertionClaims, AssertionError> {
    let string_claim = |name: &'static str| match claims.get(name) {
        None => Err(AssertionError::MissingClaim(name)),
        Some(Value::String(value)) => Ok(value.as_str()),
        Some(_) => Err(AssertionError::InvalidClaim(name)),
    };
    if string_claim("iss")? != client_id {
        return Err(AssertionError::IssuerMismatch);
    }
    if string_claim("sub")? != client_id {
        return Err(AssertionError::SubjectMismatch);
    }
    let audience_matches = match claims.get("aud") {
        None => return Err(AssertionError::MissingClaim("aud")),
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        Some(_) => return Err(AssertionError::InvalidClaim("aud")),
    };
    if !audience_matches {
        return Err(AssertionError::AudienceMismatch);
    }
    let time_claim = |name: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or(AssertionError::InvalidClaim(name)),
    };
    let exp = time_claim("exp")?.ok_or(AssertionError::MissingClaim("exp"))?;
    if exp <= now_s {
        return Err(AssertionError::Expired { exp, now_s });
    }
    if exp > now_s.saturating_add(ASSERTION_LIFETIME_MAX_S) {
        return Err(AssertionError::LifetimeTooLong { exp, now_s });
    }
    for name in ["nbf", "iat"] {
        if let Some(value) = time_claim(name)? {
            if value > now_s.saturating_add(ASSERTION_CLOCK_SKEW_S) {
                return Err(AssertionError::NotYetValid { claim: name, value, now_s });
            }
        }
    }
    let jti = string_claim("jti")?;
    if jti.is_empty() || jti.len() > JTI_BYTES_MAX {
        return Err(AssertionError::InvalidClaim("jti"));
    }
    Ok(AssertionClaims { jti: jti.to_owned(), exp })
}

/// Signs `claims` (a JSON object) as a compact JWS with ES256, header
/// `{"alg":"ES256","typ":"JWT"[,"kid":…]}`, using a P-256 private key in PKCS#8 (as
/// [`es256_keypair`] makes). For tests and the CLI demo; ECDSA nonces come from ring's
/// `SystemRandom` (the operating system's generator) hedged with the message.
pub fn sign_es256(pkcs8: &[u8], kid: Option<&str>, claims: &Value) -> Result<String, AssertionError> {
    if !claims.is_object() {
        return Err(AssertionError::Signing("claims must be a JSON object"));
    }
    let random = SystemRandom::new();
    let key_pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &random)
        .map_err(|_| AssertionError::Signing("not a P-256 private key in PKCS#8"))?;
    let mut header = Map::new();
    header.insert("alg".to_owned(), Value::from("ES256"));
    header.insert("typ".to_owned(), Value::from("JWT"));
    if let Some(kid) = kid {
        header.insert("kid".to_owned(), Value::from(kid));
    }
    let header = serde_json::to_vec(&header).map_err(|_| AssertionError::Signing("header did not serialise"))?;
    let claims = serde_json::to_vec(claims).map_err(|_| AssertionError::Signing("claims did not serialise"))?;
    let signing_input = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
    let signature_value = key_pair
        .sign(&random, signing_input.as_bytes())
        .map_err(|_| AssertionError::Signing("ECDSA signing failed"))?;
    Ok(format!("{signing_input}.{}", B64URL.encode(signature_value.as_ref())))
}

/// A new P-256 key pair: the private key in PKCS#8 (a secret: the caller stores it sealed
/// or zeroizes it) and the public JWK to register, with `kid` set to its RFC 7638
/// thumbprint, `alg` ES256 and `use` sig.
pub fn es256_keypair() -> Result<(Vec<u8>, Value), AssertionError> {
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &random)
        .map_err(|_| AssertionError::Signing("the operating system's random generator failed"))?;
    let key_pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
        .map_err(|_| AssertionError::Signing("generated key did not parse"))?;
    let point = key_pair.public_key().as_ref();
    let x = B64URL.encode(&point[1..1 + P256_COORDINATE_BYTES]);
    let y = B64URL.encode(&point[1 + P256_COORDINATE_BYTES..]);
    // RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace.
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = B64URL.encode(medvault_crypto::token::sha256(thumbprint_input.as_bytes()));
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "alg": "ES256",
        "use": "sig",
        "kid": kid,
    });
    Ok((pkcs8.as_ref().to_vec(), jwk))
}

/// Why a key or an assertion was refused. Precise enough for a log line; never contains
/// the assertion, its signature or key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// The assertion is longer than [`ASSERTION_BYTES_MAX`].
    #[error("client assertion longer than {max} bytes")]
    TooLarge { max: usize },
    /// Not a compact JWS of unpadded base64url JSON objects without repeated members.
    #[error("client assertion malformed: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not ES256 or RS384 (this includes `none` and HMAC).
    #[error("client assertion alg {alg:?} not allowed (ES256 or RS384 only)")]
    AlgorithmNotAllowed { alg: String },
    /// The header's `typ` is present and not `JWT`.
    #[error("client assertion typ is not JWT")]
    TypeNotAllowed,
    /// The header has `crit`: it relies on extensions this server does not understand.
    #[error("client assertion header has crit; no extension is supported")]
    CriticalHeader,
    /// No registered key has the header's `kid`.
    #[error("no registered key has kid {kid:?}")]
    UnknownKey { kid: String },
    /// The key named by `kid` is of another type than the header's `alg`.
    #[error("the key named by kid does not fit the assertion's alg")]
    KeyAlgorithmMismatch,
    /// No `kid` was given and no registered key fits the header's `alg`.
    #[error("no registered key fits the assertion's alg")]
    NoKeyForAlgorithm,
    /// The signature does not verify with any candidate key.
    #[error("client assertion signature does not verify")]
    BadSignature,
    /// A required claim is absent.
    #[error("client assertion has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an out-of-range value.
    #[error("client assertion claim {0} is invalid")]
    InvalidClaim(&'static str),
    /// `iss` is not the client id.
    #[error("client assertion iss is not the client id")]
    IssuerMismatch,
    /// `sub` is not the client id.
    #[error("client assertion sub is not the client id")]
    SubjectMismatch,
    /// `aud` is not (and does not contain) this server's token endpoint.
    #[error("client assertion aud is not this token endpoint")]
    AudienceMismatch,
    /// `exp` is not after now.
    #[error("client assertion expired (exp {exp}, now {now_s})")]
    Expired { exp: i64, now_s: i64 },
    /// `exp` is more than [`ASSERTION_LIFETIME_MAX_S`] after now.
    #[error("client assertion exp {exp} is more than 300 s after now ({now_s})")]
    LifetimeTooLong { exp: i64, now_s: i64 },
    /// `nbf` or `iat` is more than [`ASSERTION_CLOCK_SKEW_S`] after now.
    #[error("client assertion {claim} {value} is in the future (now {now_s})")]
    NotYetValid { claim: &'static str, value: i64, now_s: i64 },
    /// A JWK is malformed or unusable.
    #[error("JWK refused: {0}")]
    Jwk(&'static str),
    /// A JWK member is missing or badly encoded.
    #[error("JWK member {member} refused: {reason}")]
    JwkMember { member: &'static str, reason: &'static str },
    /// A JWK has a private member: a client must register only its public key.
    #[error("JWK refused: it contains the private member {0:?}; register only the public key")]
    PrivateKeyMember(&'static str),
    /// A key type, curve or size this server does not verify.
    #[error("JWK refused: {0}")]
    UnsupportedKey(&'static str),
    /// An RSA modulus below [`RSA_MODULUS_BITS_MIN`].
    #[error("JWK refused: RSA modulus of {bits} bits; at least 2048 are required")]
    RsaKeyTooSmall { bits: usize },
    /// One key of a JWKS was refused.
    #[error("key {index} of the JWKS: {source}")]
    JwksEntry {
        index: usize,
        #[source]
        source: Box<AssertionError>,
    },
    /// Signing or key generation failed.
    #[error("signing failed: {0}")]
    Signing(&'static str),
}

/// A JSON object that refuses repeated member names.
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(UniqueObjectVisitor)
    }
}

struct UniqueObjectVisitor;

impl<'de> Visitor<'de> for UniqueObjectVisitor {
    type Value = UniqueObject;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
        let mut object = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(de::Error::custom("repeated member"));
            }
            let value: Value = access.next_value()?;
            object.insert(name, value);
        }
        Ok(UniqueObject(object))
    }
}

fn decode_object(part: &str, which: &'static str) -> Result<Map<String, Value>, AssertionError> {
    let bytes = B64URL.decode(part).map_err(|_| {
        AssertionError::Malformed(if which == "header" {
            "header is not unpadded base64url"
        } else {
            "payload is not unpadded base64url"
        })
    })?;
    serde_json::from_slice::<UniqueObject>(&bytes).map(|object| object.0).map_err(|_| {
        AssertionError::Malformed(if which == "header" {
            "header is not a JSON object without repeated members"
        } else {
            "payload is not a JSON object without repeated members"
        })
    })
}

/// An attacker-chosen value made safe to log: at most 64 characters, printable ASCII.
fn quoted(value: &str) -> String {
    value
        .chars()
        .take(QUOTED_CHARS_MAX)
        .map(|character| if character.is_ascii_graphic() || character == ' ' { character } else { '?' })
        .collect()
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|byte| **byte == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn bit_length(big_endian: &[u8]) -> usize {
    match big_endian.iter().position(|byte| *byte != 0) {
        None => 0,
        Some(first) => (big_endian.len() - first) * 8 - big_endian[first].leading_zeros() as usize,
    }
}

/// ring's rule for RSA public exponents: odd, at least 3, less than 2^33.
fn is_usable_rsa_exponent(exponent: &[u8]) -> bool {
    if exponent.is_empty() || exponent.len() > 5 {
        return false;
    }
    let value = exponent.iter().fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
    value >= 3 && value % 2 == 1 && value < (1 << 33)
}
