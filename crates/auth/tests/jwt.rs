//! Client assertions (RFC 7523 private_key_jwt), attack first.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use medvault_auth::jwt::{
    es256_keypair, parse_jwks, sign_es256, verify_client_assertion, AssertionClaims, AssertionError, ClientKey,
    ASSERTION_BYTES_MAX,
};

const CLIENT: &str = "client-es";
const AUDIENCE: &str = "https://medvault.example/auth/token";
const NOW: i64 = 1_700_000_000;

/// A fixed RSA-2048 test key. Made once with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`; the JWSs below were
/// signed with `openssl dgst -sha384 -sign` (and `-sha256` for the RS256 one) over
/// `base64url(header) "." base64url(payload)`. Only the public half is kept.
const RSA_N: &str = "_QFkl07j9NSnSMTgA7I_usKIgkGWPkP2RHtZQQSpzclvz9s-YlQAsEeoO8DMUe7ttyVFhcKjvlMFKVrpsx-zMIwOSaWT2y2_fOcbVYD7rrPi5EaqmubU0TLYEY9thNm7DywDwHnLnVBAvzfJKcUrYv-c9r9nkiKv0Q9BxA2K2IBgir_YRsVoUAdfRg7Hdl0HQrPJm18X3_hYiLIsFMcAB1t16544-UPlPhtQKHLBLr47ipJ7V0hgXycg9zL_ksukbOxGrOPtoTJJCP-O_1XUFxk_KDnLVGYRgsK0KLrGES6ueVIjMWXHh4Sa2xedy8fjPZ5PT7y91qdTaDZ6pBsBbw";
const RSA_E: &str = "AQAB";
/// Header `{"alg":"RS384","typ":"JWT","kid":"rsa-test-1"}`; claims: iss = sub =
/// `client-rsa`, aud = AUDIENCE, exp 1700000300, iat 1700000000, jti `rsa-jti-1`.
const RS384_ASSERTION: &str = "eyJhbGciOiJSUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6InJzYS10ZXN0LTEifQ.eyJpc3MiOiJjbGllbnQtcnNhIiwic3ViIjoiY2xpZW50LXJzYSIsImF1ZCI6Imh0dHBzOi8vbWVkdmF1bHQuZXhhbXBsZS9hdXRoL3Rva2VuIiwiZXhwIjoxNzAwMDAwMzAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6InJzYS1qdGktMSJ9.B4SiEYlL6ByB_AYPKAdlHZAKHlFTjy3faQwC_L33ot4V6G08JD8VIxcpzhW-hvVNIbHgXPjiPHqvJ2T3slatqffLf1-OFV8zAksIPNAfj8ucCpgCLRYY7ntxaH2i20ARUgkKXUk5iMC_iQRNMZaXOYgZSywO4CFwvZsplxwhheYCYPP9AFrIelTZh6rieN_9H9N0Fwz26si1WzDs4QUTtSr4ViPtr2kQiFL61CGW4dTECNe_ogdS5_Vekxw-MoDtd8iQBZK8EXXtt5MnJWJYS8y6uCJZZeUCm3QW0NABt68lyTRlIMSk8LSdl6D198e8ezM5JQOI5dVNO2xMJiIYrg";
/// The same claims signed with the same key as RS256.
const RS256_ASSERTION: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYS10ZXN0LTEifQ.eyJpc3MiOiJjbGllbnQtcnNhIiwic3ViIjoiY2xpZW50LXJzYSIsImF1ZCI6Imh0dHBzOi8vbWVkdmF1bHQuZXhhbXBsZS9hdXRoL3Rva2VuIiwiZXhwIjoxNzAwMDAwMzAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6InJzYS1qdGktMSJ9.WFoYa_wEA_gpFPm5Wvds-oInkzB5mVZv9i7WZoMZUm-qO9SVTO-51E9WembzMvllKiYcrput3QXWY8PjQDqwFAr-jeLHkvio1xqNoo3nTTJ-UKvjHdjKl5-61uMWaC01KEvGQCUSD2rjKXT6OAPMhVLRTiTgwVjlJTRzuLFo-5btqmAZvhUfxP-ptIeg3z6pmLYXaQ7CfOxtpZ2gE5MTuzDyC5xFZQB1FOxbNPLyRwj3lYDSS39iGbFjZyWZg2y-G1gpSxSq-E4LbZYKdz7pQXgyu_AMJ1fGu4apQjH248GEWXm3YAw6iM0FhCsaHfeRtZ9M8GSgsg3dw6L2uhhByw";
/// A 1024-bit modulus (from a key made the same way), to be refused.
const RSA_1024_N: &str = "nDwsbt_HjtiDFJlZq-KbMzNmUVD0TRieIi7upmlRDstnpM88uMxtL7mNGoMKyyL8VmSFDodyP2gHZ8jfs2HwKd6sazJMbTmqev_Cup6p5cVYB-5a4RiHUOG-hJszlz1_n6n-k4rGq7QpgYSroyiVG2rZdpEdsLUcBNtJODP8Tr0";
const RSA_CLIENT: &str = "client-rsa";
const RSA_NOW: i64 = 1_700_000_100;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_jwk() -> Value {
    json!({"kty": "RSA", "kid": "rsa-test-1", "alg": "RS384", "use": "sig", "n": RSA_N, "e": RSA_E})
}

fn rsa_key() -> ClientKey {
    ClientKey::from_jwk(&rsa_jwk()).expect("RSA test key")
}

struct EsClient {
    pkcs8: Vec<u8>,
    jwk: Value,
    key: ClientKey,
}

fn es_client() -> EsClient {
    let (pkcs8, jwk) = es256_keypair().expect("key pair");
    let key = ClientKey::from_jwk(&jwk).expect("own JWK parses");
    EsClient { pkcs8, jwk, key }
}

impl EsClient {
    fn kid(&self) -> &str {
        self.jwk["kid"].as_str().expect("kid")
    }

    fn sign(&self, claims: &Value) -> String {
        sign_es256(&self.pkcs8, Some(self.kid()), claims).expect("sign")
    }

    /// Signs exact header and payload texts, for what `sign_es256` will not make.
    fn sign_raw(&self, header: &str, payload: &str) -> String {
        let random = SystemRandom::new();
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8, &random).expect("pkcs8");
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature = key_pair.sign(&random, input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

fn claims() -> Value {
    json!({
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": AUDIENCE,
        "exp": NOW + 240,
        "iat": NOW,
        "jti": "jti-0001",
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().expect("object").remove(name);
    claims
}

fn verify(assertion: &str, keys: &[ClientKey]) -> Result<AssertionClaims, AssertionError> {
    verify_client_assertion(assertion, keys, CLIENT, AUDIENCE, NOW)
}

fn parts(assertion: &str) -> Vec<String> {
    assertion.split('.').map(str::to_owned).collect()
}

#[test]
fn a_valid_es256_assertion_is_accepted() {
    let client = es_client();
    let assertion = client.sign(&claims());
    assert_eq!(
        verify(&assertion, std::slice::from_ref(&client.key)),
        Ok(AssertionClaims { jti: "jti-0001".to_owned(), exp: NOW + 240 })
    );
}

#[test]
fn a_valid_rs384_assertion_is_accepted() {
    assert_eq!(
        verify_client_assertion(RS384_ASSERTION, &[rsa_key()], RSA_CLIENT, AUDIENCE, RSA_NOW),
        Ok(AssertionClaims { jti: "rsa-jti-1".to_owned(), exp: 1_700_000_300 })
    );
}

#[test]
fn rs384_attacks_are_refused() {
    let keys = [rsa_key()];
    let check = |assertion: &str, now_s| verify_client_assertion(assertion, &keys, RSA_CLIENT, AUDIENCE, now_s);
    // Expired, and too long-lived when seen too early.
    assert_eq!(
        check(RS384_ASSERTION, 1_700_000_300),
        Err(AssertionError::Expired { exp: 1_700_000_300, now_s: 1_700_000_300 })
    );
    assert_eq!(
        check(RS384_ASSERTION, 1_699_999_999),
        Err(AssertionError::LifetimeTooLong { exp: 1_700_000_300, now_s: 1_699_999_999 })
    );
    // The same key and claims as RS256: not an allowed algorithm.
    assert_eq!(check(RS256_ASSERTION, RSA_NOW), Err(AssertionError::AlgorithmNotAllowed { alg: "RS256".to_owned() }));
    // A payload swapped in under the old signature.
    let mut tampered = parts(RS384_ASSERTION);
    let payload = r#"{"iss":"client-rsa","sub":"client-rsa","aud":"https://medvault.example/auth/token","exp":1700000300,"iat":1700000000,"jti":"rsa-jti-2"}"#;
    tampered[1] = b64(payload.as_bytes());
    assert_eq!(check(&tampered.join("."), RSA_NOW), Err(AssertionError::BadSignature));
    // A signature bit flipped.
    let mut signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts(RS384_ASSERTION)[2]).expect("fixture");
    signature[100] ^= 0x01;
    let mut flipped = parts(RS384_ASSERTION);
    flipped[2] = b64(&signature);
    assert_eq!(check(&flipped.join("."), RSA_NOW), Err(AssertionError::BadSignature));
}

#[test]
fn a_tampered_payload_is_refused() {
    let client = es_client();
    let mut tampered = parts(&client.sign(&claims()));
    tampered[1] = b64(serde_json::to_string(&with(claims(), "jti", json!("jti-0002"))).expect("json").as_bytes());
    assert_eq!(verify(&tampered.join("."), &[client.key]), Err(AssertionError::BadSignature));
}

#[test]
fn a_tampered_signature_is_refused() {
    let client = es_client();
    let assertion = client.sign(&claims());
    let mut signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts(&assertion)[2]).expect("own signature");
    for index in [0, 31, 32, 63] {
        let mut flipped_signature = signature.clone();
        flipped_signature[index] ^= 0x80;
        let mut flipped = parts(&assertion);
        flipped[2] = b64(&flipped_signature);
        assert_eq!(verify(&flipped.join("."), std::slice::from_ref(&client.key)), Err(AssertionError::BadSignature));
    }
    signature.truncate(63);
    let mut short = parts(&assertion);
    short[2] = b64(&signature);
    assert_eq!(verify(&short.join("."), &[client.key]), Err(AssertionError::BadSignature));
}

#[test]
fn a_signature_by_another_key_under_the_clients_kid_is_refused() {
    let client = es_client();
    let attacker = es_client();
    let forged = sign_es256(&attacker.pkcs8, Some(client.kid()), &claims()).expect("sign");
    assert_eq!(verify(&forged, &[client.key]), Err(AssertionError::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let client = es_client();
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(serde_json::to_string(&claims()).expect("json").as_bytes());
    for signature in ["", "AAAA"] {
        assert_eq!(
            verify(&format!("{header}.{payload}.{signature}"), std::slice::from_ref(&client.key)),
            Err(AssertionError::AlgorithmNotAllowed { alg: "none".to_owned() })
        );
    }
}

#[test]
fn hs256_with_the_public_key_as_secret_is_refused() {
    let client = es_client();
    let header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, client.kid()).as_bytes());
    let payload = b64(serde_json::to_string(&claims()).expect("json").as_bytes());
    let input = format!("{header}.{payload}");
    let ClientKey::Es256 { public_point, .. } = &client.key else { panic!("EC key") };
    for secret in [public_point.clone(), serde_json::to_vec(&client.jwk).expect("json")] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let tag = ring::hmac::sign(&key, input.as_bytes());
        let forged = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(
            verify(&forged, std::slice::from_ref(&client.key)),
            Err(AssertionError::AlgorithmNotAllowed { alg: "HS256".to_owned() })
        );
    }
}

#[test]
fn other_algorithms_are_refused_and_quoted_safely() {
    let client = es_client();
    let payload = r#"{"iss":"client-es"}"#;
    for (alg, quoted) in [
        ("ES384", "ES384".to_owned()),
        ("PS384", "PS384".to_owned()),
        ("EdDSA", "EdDSA".to_owned()),
        ("es256", "es256".to_owned()),
        ("ES256\n\u{1b}[31m", "ES256??[31m".to_owned()),
        (&"X".repeat(100), "X".repeat(64)),
    ] {
        let header = json!({"alg": alg}).to_string();
        assert_eq!(
            verify(&client.sign_raw(&header, payload), std::slice::from_ref(&client.key)),
            Err(AssertionError::AlgorithmNotAllowed { alg: quoted })
        );
    }
    assert_eq!(
        verify(&client.sign_raw(r#"{"typ":"JWT"}"#, payload), std::slice::from_ref(&client.key)),
        Err(AssertionError::Malformed("header has no alg"))
    );
    assert_eq!(
        verify(&client.sign_raw(r#"{"alg":["ES256"]}"#, payload), &[client.key]),
        Err(AssertionError::Malformed("header alg is not a string"))
    );
}

#[test]
fn the_kid_selects_the_key_and_an_unknown_kid_is_refused() {
    let client = es_client();
    let other = es_client();
    let keys = [other.key.clone(), client.key.clone(), rsa_key()];
    assert!(verify(&client.sign(&claims()), &keys).is_ok());
    let unknown = sign_es256(&client.pkcs8, Some("no-such-key"), &claims()).expect("sign");
    assert_eq!(verify(&unknown, &keys), Err(AssertionError::UnknownKey { kid: "no-such-key".to_owned() }));
}

#[test]
fn without_a_kid_every_key_of_the_type_is_tried() {
    let client = es_client();
    let other = es_client();
    let assertion = sign_es256(&client.pkcs8, None, &claims()).expect("sign");
    let keys = [rsa_key(), other.key.clone(), client.key.clone()];
    assert!(verify(&assertion, &keys).is_ok());
    assert_eq!(verify(&assertion, &[rsa_key(), other.key]), Err(AssertionError::BadSignature));
    assert_eq!(verify(&assertion, &[rsa_key()]), Err(AssertionError::NoKeyForAlgorithm));
    assert_eq!(verify(&assertion, &[]), Err(AssertionError::NoKeyForAlgorithm));
}

#[test]
fn the_alg_must_fit_the_key_named_by_kid() {
    let client = es_client();
    // An RS384 header naming the EC key.
    let header = format!(r#"{{"alg":"RS384","kid":"{}"}}"#, client.kid());
    let assertion = client.sign_raw(&header, &claims().to_string());
    assert_eq!(verify(&assertion, std::slice::from_ref(&client.key)), Err(AssertionError::KeyAlgorithmMismatch));
    // An ES256 header naming the RSA key.
    let assertion = client.sign_raw(r#"{"alg":"ES256","kid":"rsa-test-1"}"#, &claims().to_string());
    assert_eq!(verify(&assertion, &[rsa_key()]), Err(AssertionError::KeyAlgorithmMismatch));
}

#[test]
fn header_typ_and_crit_are_checked() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    let payload = claims().to_string();
    assert!(verify(&client.sign_raw(r#"{"alg":"ES256","typ":"JWT"}"#, &payload), keys).is_ok());
    assert!(verify(&client.sign_raw(r#"{"alg":"ES256"}"#, &payload), keys).is_ok());
    for typ in [r#""at+jwt""#, r#""jwt""#, r#""JOSE""#, "1", "null"] {
        let header = format!(r#"{{"alg":"ES256","typ":{typ}}}"#);
        assert_eq!(verify(&client.sign_raw(&header, &payload), keys), Err(AssertionError::TypeNotAllowed), "{typ}");
    }
    let header = r#"{"alg":"ES256","crit":["exp"],"exp":1}"#;
    assert_eq!(verify(&client.sign_raw(header, &payload), keys), Err(AssertionError::CriticalHeader));
    // An embedded key is ignored, never trusted: the attacker's own key does not help.
    let attacker = es_client();
    let header = json!({"alg": "ES256", "jwk": attacker.jwk}).to_string();
    assert_eq!(verify(&attacker.sign_raw(&header, &payload), keys), Err(AssertionError::BadSignature));
}

#[test]
fn wrong_audience_is_refused() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    for aud in [
        json!("https://other.example/token"),
        json!([]),
        json!(["https://other.example/token"]),
        json!(AUDIENCE.to_uppercase()),
    ] {
        assert_eq!(
            verify(&client.sign(&with(claims(), "aud", aud.clone())), keys),
            Err(AssertionError::AudienceMismatch),
            "{aud}"
        );
    }
    assert!(verify(&client.sign(&with(claims(), "aud", json!(["https://other.example", AUDIENCE]))), keys).is_ok());
    assert_eq!(verify(&client.sign(&without(claims(), "aud")), keys), Err(AssertionError::MissingClaim("aud")));
    assert_eq!(verify(&client.sign(&with(claims(), "aud", json!(7))), keys), Err(AssertionError::InvalidClaim("aud")));
}

#[test]
fn wrong_issuer_or_subject_is_refused() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    assert_eq!(
        verify(&client.sign(&with(claims(), "iss", json!("client-other"))), keys),
        Err(AssertionError::IssuerMismatch)
    );
    assert_eq!(
        verify(&client.sign(&with(claims(), "sub", json!("client-other"))), keys),
        Err(AssertionError::SubjectMismatch)
    );
    assert_eq!(verify(&client.sign(&without(claims(), "iss")), keys), Err(AssertionError::MissingClaim("iss")));
    assert_eq!(verify(&client.sign(&without(claims(), "sub")), keys), Err(AssertionError::MissingClaim("sub")));
    assert_eq!(
        verify(&client.sign(&with(claims(), "sub", json!(["client-es"]))), keys),
        Err(AssertionError::InvalidClaim("sub"))
    );
    // The right assertion for another client id.
    assert_eq!(
        verify_client_assertion(&client.sign(&claims()), keys, "client-other", AUDIENCE, NOW),
        Err(AssertionError::IssuerMismatch)
    );
}

#[test]
fn expiry_is_required_in_the_future_and_at_most_300_seconds_ahead() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    let at = |exp: Value| verify(&client.sign(&with(claims(), "exp", exp)), keys);
    assert_eq!(at(json!(NOW)), Err(AssertionError::Expired { exp: NOW, now_s: NOW }));
    assert_eq!(at(json!(NOW - 1000)), Err(AssertionError::Expired { exp: NOW - 1000, now_s: NOW }));
    assert!(at(json!(NOW + 1)).is_ok());
    assert!(at(json!(NOW + 300)).is_ok());
    assert_eq!(at(json!(NOW + 301)), Err(AssertionError::LifetimeTooLong { exp: NOW + 301, now_s: NOW }));
    assert_eq!(at(json!(i64::MAX)), Err(AssertionError::LifetimeTooLong { exp: i64::MAX, now_s: NOW }));
    for bad in [json!(1_700_000_100.5), json!("1700000100"), json!(null), json!(u64::MAX)] {
        assert_eq!(at(bad.clone()), Err(AssertionError::InvalidClaim("exp")), "{bad}");
    }
    assert_eq!(verify(&client.sign(&without(claims(), "exp")), keys), Err(AssertionError::MissingClaim("exp")));
}

#[test]
fn nbf_and_iat_may_not_be_in_the_future_beyond_60_seconds() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    for name in ["nbf", "iat"] {
        let at = |value: i64| verify(&client.sign(&with(claims(), name, json!(value))), keys);
        assert!(at(NOW + 60).is_ok(), "{name}");
        assert!(at(NOW - 100).is_ok(), "{name}");
        assert_eq!(
            at(NOW + 61),
            Err(AssertionError::NotYetValid {
                claim: if name == "nbf" { "nbf" } else { "iat" },
                value: NOW + 61,
                now_s: NOW
            })
        );
        assert_eq!(
            verify(&client.sign(&with(claims(), name, json!("soon"))), keys),
            Err(AssertionError::InvalidClaim(if name == "nbf" { "nbf" } else { "iat" }))
        );
    }
    assert!(verify(&client.sign(&without(claims(), "iat")), keys).is_ok());
}

#[test]
fn jti_is_required_with_1_to_256_bytes() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    assert_eq!(verify(&client.sign(&without(claims(), "jti")), keys), Err(AssertionError::MissingClaim("jti")));
    assert_eq!(verify(&client.sign(&with(claims(), "jti", json!(""))), keys), Err(AssertionError::InvalidClaim("jti")));
    assert_eq!(verify(&client.sign(&with(claims(), "jti", json!(42))), keys), Err(AssertionError::InvalidClaim("jti")));
    let longest = "j".repeat(256);
    assert_eq!(verify(&client.sign(&with(claims(), "jti", json!(longest))), keys).map(|c| c.jti.len()), Ok(256));
    assert_eq!(
        verify(&client.sign(&with(claims(), "jti", json!("j".repeat(257)))), keys),
        Err(AssertionError::InvalidClaim("jti"))
    );
}

#[test]
fn padded_or_non_url_base64_is_refused() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    let assertion = client.sign(&claims());
    // The 64-byte signature is 86 characters; "==" makes it valid padded base64.
    assert_eq!(
        verify(&format!("{assertion}=="), keys),
        Err(AssertionError::Malformed("signature is not unpadded base64url"))
    );
    // A header whose JSON needs padding, sent padded (and correctly signed).
    let header = r#"{"alg":"ES256"} "#; // 16 bytes: padded base64 ends in "=="
    let padded_header = base64::engine::general_purpose::URL_SAFE.encode(header);
    assert!(padded_header.ends_with("=="));
    let payload = b64(claims().to_string().as_bytes());
    let input = format!("{padded_header}.{payload}");
    let random = SystemRandom::new();
    let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &client.pkcs8, &random).expect("pkcs8");
    let signature = key_pair.sign(&random, input.as_bytes()).expect("sign");
    assert_eq!(
        verify(&format!("{input}.{}", b64(signature.as_ref())), keys),
        Err(AssertionError::Malformed("header is not unpadded base64url"))
    );
    // The standard alphabet's + and / instead of - and _.
    let standard = assertion.replace('-', "+").replace('_', "/");
    if standard != assertion {
        assert!(matches!(verify(&standard, keys), Err(AssertionError::Malformed(_))));
    }
    // Non-canonical trailing bits in the signature's last character.
    let mut signature_part = parts(&assertion)[2].clone();
    let last = signature_part.pop().expect("non-empty");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = alphabet.find(last).expect("base64url");
    signature_part.push(alphabet.chars().nth(value ^ 0b01).expect("in range"));
    let mut odd = parts(&assertion);
    odd[2] = signature_part;
    assert_eq!(verify(&odd.join("."), keys), Err(AssertionError::Malformed("signature is not unpadded base64url")));
}

#[test]
fn structure_and_size_are_checked_first() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    let assertion = client.sign(&claims());
    assert_eq!(verify(&"a".repeat(ASSERTION_BYTES_MAX + 1), keys), Err(AssertionError::TooLarge { max: 8192 }));
    assert_eq!(
        verify(&"a".repeat(ASSERTION_BYTES_MAX), keys),
        Err(AssertionError::Malformed("not three dot-separated parts"))
    );
    assert_eq!(
        verify(&format!("{assertion}.extra"), keys),
        Err(AssertionError::Malformed("not three dot-separated parts"))
    );
    assert_eq!(verify("", keys), Err(AssertionError::Malformed("not three dot-separated parts")));
    let p = parts(&assertion);
    assert_eq!(
        verify(&format!("{}.{}", p[0], p[1]), keys),
        Err(AssertionError::Malformed("not three dot-separated parts"))
    );
    assert_eq!(
        verify(&format!("{}.{}.{}", b64(b"[1,2]"), p[1], p[2]), keys),
        Err(AssertionError::Malformed("header is not a JSON object without repeated members"))
    );
    // A payload that is not an object, correctly signed.
    assert_eq!(
        verify(&client.sign_raw(r#"{"alg":"ES256"}"#, "\"claims\""), keys),
        Err(AssertionError::Malformed("payload is not a JSON object without repeated members"))
    );
}

#[test]
fn repeated_members_are_refused() {
    let client = es_client();
    let keys = std::slice::from_ref(&client.key);
    let payload = format!(
        r#"{{"iss":"client-evil","iss":"{CLIENT}","sub":"{CLIENT}","aud":"{AUDIENCE}","exp":{},"jti":"x"}}"#,
        NOW + 60
    );
    assert_eq!(
        verify(&client.sign_raw(r#"{"alg":"ES256"}"#, &payload), keys),
        Err(AssertionError::Malformed("payload is not a JSON object without repeated members"))
    );
    assert_eq!(
        verify(&client.sign_raw(r#"{"alg":"HS256","alg":"ES256"}"#, &claims().to_string()), keys),
        Err(AssertionError::Malformed("header is not a JSON object without repeated members"))
    );
}

#[test]
fn errors_never_contain_the_assertion() {
    let client = es_client();
    let assertion = client.sign(&with(claims(), "aud", json!("https://other.example")));
    let error = verify(&assertion, std::slice::from_ref(&client.key)).expect_err("wrong aud");
    let text = format!("{error} {error:?}");
    for part in parts(&assertion) {
        assert!(!text.contains(&part), "{text}");
    }
    assert_eq!(error.to_string(), "client assertion aud is not this token endpoint");
}

#[test]
fn generated_key_pairs_publish_a_usable_public_jwk() {
    let client = es_client();
    let jwk = client.jwk.as_object().expect("object");
    let mut members: Vec<&str> = jwk.keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    for member in ["x", "y", "kid"] {
        assert_eq!(jwk[member].as_str().expect("string").len(), 43, "{member}");
    }
    assert_eq!(client.key.kid(), Some(client.kid()));
    assert_eq!(client.key.algorithm(), "ES256");
    let other = es_client();
    assert_ne!(other.kid(), client.kid());
    assert!(matches!(sign_es256(b"not a key", None, &claims()), Err(AssertionError::Signing(_))));
    assert!(matches!(sign_es256(&client.pkcs8, None, &json!([1])), Err(AssertionError::Signing(_))));
}

#[test]
fn jwks_with_private_members_are_refused() {
    let client = es_client();
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        let mut jwk = client.jwk.clone();
        jwk[member] = json!("AAAA");
        assert_eq!(ClientKey::from_jwk(&jwk), Err(AssertionError::PrivateKeyMember(member)));
        let mut jwk = rsa_jwk();
        jwk[member] = json!("AAAA");
        assert_eq!(ClientKey::from_jwk(&jwk), Err(AssertionError::PrivateKeyMember(member)));
    }
    assert_eq!(
        ClientKey::from_jwk(&json!({"kty": "oct", "k": "c2VjcmV0"})),
        Err(AssertionError::PrivateKeyMember("k"))
    );
}

#[test]
fn unusable_jwks_are_refused_with_the_reason() {
    let client = es_client();
    let ec = |name: &str, value: Value| with(client.jwk.clone(), name, value);
    let rsa = |name: &str, value: Value| with(rsa_jwk(), name, value);
    let cases = [
        (json!("EC"), AssertionError::Jwk("not a JSON object")),
        (ec("crv", json!("P-384")), AssertionError::UnsupportedKey("EC keys must be on curve P-256")),
        (ec("kty", json!("OKP")), AssertionError::UnsupportedKey("kty must be EC or RSA")),
        (without(client.jwk.clone(), "kty"), AssertionError::Jwk("kty missing")),
        (ec("use", json!("enc")), AssertionError::Jwk("use is not sig")),
        (ec("key_ops", json!(["sign"])), AssertionError::Jwk("key_ops does not include verify")),
        (ec("alg", json!("ES384")), AssertionError::Jwk("alg of an EC key must be ES256")),
        (ec("kid", json!(7)), AssertionError::Jwk("kid is not a string of 1 to 256 bytes")),
        (ec("kid", json!("")), AssertionError::Jwk("kid is not a string of 1 to 256 bytes")),
        (ec("x", json!(b64(&[1; 31]))), AssertionError::Jwk("P-256 coordinates must be 32 bytes each")),
        (
            ec("y", json!(format!("{}=", b64(&[1; 32])))),
            AssertionError::JwkMember { member: "y", reason: "not unpadded base64url" },
        ),
        (
            without(client.jwk.clone(), "x"),
            AssertionError::JwkMember { member: "x", reason: "missing or not a string" },
        ),
        (rsa("alg", json!("RS256")), AssertionError::Jwk("alg of an RSA key must be RS384")),
        (rsa("n", json!(RSA_1024_N)), AssertionError::RsaKeyTooSmall { bits: 1024 }),
        (
            rsa("e", json!("AQ")),
            AssertionError::JwkMember { member: "e", reason: "must be odd, at least 3 and at most 33 bits" },
        ),
        (
            rsa("e", json!("AQAA")),
            AssertionError::JwkMember { member: "e", reason: "must be odd, at least 3 and at most 33 bits" },
        ),
        (rsa("n", json!(b64(&[0xff; 1025]))), AssertionError::UnsupportedKey("RSA modulus above 8192 bits")),
    ];
    for (jwk, error) in cases {
        assert_eq!(ClientKey::from_jwk(&jwk), Err(error), "{jwk}");
    }
    assert!(ClientKey::from_jwk(&ec("key_ops", json!(["verify"]))).is_ok());
    assert!(ClientKey::from_jwk(&without(client.jwk.clone(), "use")).is_ok());
}

#[test]
fn an_rsa_modulus_with_a_leading_zero_byte_still_verifies() {
    let mut modulus = vec![0u8];
    modulus.extend(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(RSA_N).expect("fixture"));
    let key = ClientKey::from_jwk(&with(rsa_jwk(), "n", json!(b64(&modulus)))).expect("leading zero tolerated");
    assert_eq!(key, rsa_key());
    assert_eq!(format!("{key:?}"), r#"ClientKey::Rs384 { kid: Some("rsa-test-1"), modulus_bits: 2048, .. }"#);
    assert!(verify_client_assertion(RS384_ASSERTION, &[key], RSA_CLIENT, AUDIENCE, RSA_NOW).is_ok());
}

#[test]
fn a_jwks_is_parsed_whole_or_refused_naming_the_key() {
    let client = es_client();
    let keys = parse_jwks(&json!({"keys": [client.jwk, rsa_jwk()]})).expect("two keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].algorithm(), "ES256");
    assert_eq!(keys[1].kid(), Some("rsa-test-1"));
    let mut private = rsa_jwk();
    private["d"] = json!("AAAA");
    assert_eq!(
        parse_jwks(&json!({"keys": [client.jwk, private]})),
        Err(AssertionError::JwksEntry { index: 1, source: Box::new(AssertionError::PrivateKeyMember("d")) })
    );
    assert_eq!(
        parse_jwks(&json!({"keys": [client.jwk, private]})).expect_err("private").to_string(),
        "key 1 of the JWKS: JWK refused: it contains the private member \"d\"; register only the public key"
    );
    assert_eq!(parse_jwks(&json!({"keys": []})), Err(AssertionError::Jwk("the JWKS has no keys")));
    assert_eq!(parse_jwks(&json!([client.jwk])), Err(AssertionError::Jwk("a JWKS is an object with a keys array")));
    let seventeen: Vec<Value> = (0..17).map(|_| client.jwk.clone()).collect();
    assert_eq!(parse_jwks(&json!({ "keys": seventeen })), Err(AssertionError::Jwk("the JWKS has more than 16 keys")));
}
