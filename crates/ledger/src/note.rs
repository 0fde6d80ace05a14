//! C2SP signed notes (`docs/format/checkpoint.md`): Ed25519 note signatures (type 0x01)
//! by the log, and `tlog-cosignature` v1 timestamped cosignatures (type 0x04) by witnesses.
//!
//! Notes arrive from outside (witnesses, backups, operators), so parsing is strict and
//! bounded: [`NOTE_BYTES_MAX`], [`NOTE_SIGNATURES_MAX`]. Signatures by unknown keys are
//! ignored, as the spec requires; a bad signature by a known key rejects the whole note.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::checkpoint::Checkpoint;
use crate::NoteError;

/// Largest note accepted or produced, in bytes. Room for 16 post-quantum cosignature lines
/// from other ecosystems (about 3.3 KB each), which must be parsed even when ignored.
pub const NOTE_BYTES_MAX: usize = 256 * 1024;
/// Most signature lines accepted in one note (C2SP requires accepting at least 16).
pub const NOTE_SIGNATURES_MAX: usize = 100;

const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";
const ED25519_SIGNATURE_BYTES: usize = 64;
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// The largest cosignature timestamp the spec allows.
const COSIGNATURE_TIME_S_MAX: u64 = i64::MAX as u64;

/// The signature types this crate verifies, with their C2SP signed-note identifier bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureType {
    /// `0x01`: Ed25519 over the note text (the log's checkpoint signature).
    Ed25519,
    /// `0x04`: `tlog-cosignature` v1, a timestamped Ed25519 witness cosignature.
    CosignatureV1,
}

impl SignatureType {
    pub fn id(self) -> u8 {
        match self {
            SignatureType::Ed25519 => 0x01,
            SignatureType::CosignatureV1 => 0x04,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            0x01 => Some(SignatureType::Ed25519),
            0x04 => Some(SignatureType::CosignatureV1),
            _ => None,
        }
    }
}

/// `SHA-256(name || "\n" || signature type || public key)[:4]` as a big-endian u32: the
/// key ID that, with the name, says which key made a signature line.
pub fn key_id(name: &str, signature_type: SignatureType, public_key: &[u8; 32]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', signature_type.id()])
        .chain_update(public_key)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// An Ed25519 signing key, kept as its 32-byte seed in a zeroizing buffer.
///
/// The seed is expanded for each signature and the expansion dropped at once: `ring` does
/// not wipe its key pairs, so none is kept alive.
pub struct SigningKey {
    seed: Zeroizing<[u8; 32]>,
    public_key: [u8; 32],
}

impl SigningKey {
    /// The key for a 32-byte seed (RFC 8032 private key); the caller draws it from the OS
    /// random generator and stores it wrapped.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, NoteError> {
        let seed = Zeroizing::new(*seed);
        let key_pair = Ed25519KeyPair::from_seed_unchecked(seed.as_slice()).map_err(|_| NoteError::InvalidSeed)?;
        let public_key = key_pair.public_key().as_ref().try_into().map_err(|_| NoteError::InvalidSeed)?;
        Ok(Self { seed, public_key })
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The verifier of this key's note signatures under `name` (the log's key).
    pub fn verifier(&self, name: &str) -> Result<Verifier, NoteError> {
        Verifier::new(name, SignatureType::Ed25519, self.public_key)
    }

    /// The verifier of this key's cosignatures under `name` (a witness's key).
    pub fn cosignature_verifier(&self, name: &str) -> Result<Verifier, NoteError> {
        Verifier::new(name, SignatureType::CosignatureV1, self.public_key)
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_BYTES], NoteError> {
        let key_pair = Ed25519KeyPair::from_seed_unchecked(self.seed.as_slice()).map_err(|_| NoteError::InvalidSeed)?;
        let signature = key_pair.sign(message);
        signature.as_ref().try_into().map_err(|_| NoteError::InvalidSeed)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey([redacted], public key {})", STANDARD.encode(self.public_key))
    }
}

/// A trusted public key: a name, a signature type and an Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    signature_type: SignatureType,
    public_key: [u8; 32],
}

impl Verifier {
    pub fn new(name: &str, signature_type: SignatureType, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, signature_type, &public_key),
            signature_type,
            public_key,
        })
    }

    /// Parses a verifier key `<name>+<8 lowercase hex digits of the key ID>+<base64(type ||
    /// 32-byte key)>` (the Go `sumdb/note` and C2SP vkey format), type 0x01 or 0x04.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, rest) = vkey.split_once('+').ok_or(NoteError::InvalidVerifierKey("no '+' after the name"))?;
        let (key_id_hex, key_base64) =
            rest.split_once('+').ok_or(NoteError::InvalidVerifierKey("no '+' after the key ID"))?;
        check_name(name)?;
        let hex_ok =
            key_id_hex.len() == 8 && key_id_hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(NoteError::InvalidVerifierKey("the key ID is not 8 lowercase hex digits"));
        }
        let stated_key_id =
            u32::from_str_radix(key_id_hex, 16).map_err(|_| NoteError::InvalidVerifierKey("bad key ID"))?;
        let key = STANDARD.decode(key_base64).map_err(|_| NoteError::InvalidVerifierKey("the key is not base64"))?;
        let (&type_id, public_key) = key.split_first().ok_or(NoteError::InvalidVerifierKey("the key is empty"))?;
        let signature_type = SignatureType::from_id(type_id)
            .ok_or(NoteError::InvalidVerifierKey("unsupported signature type (only 0x01 and 0x04)"))?;
        let public_key: [u8; 32] =
            public_key.try_into().map_err(|_| NoteError::InvalidVerifierKey("the Ed25519 key is not 32 bytes"))?;
        let verifier = Self::new(name, signature_type, public_key)?;
        if verifier.key_id != stated_key_id {
            return Err(NoteError::InvalidVerifierKey("the key ID does not match the name and key"));
        }
        Ok(verifier)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn signature_type(&self) -> SignatureType {
        self.signature_type
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The verifier key string, as [`parse`](Self::parse) reads it.
    pub fn to_vkey(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(self.signature_type.id());
        key.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(key))
    }

    /// Checks one signature payload (after the 4-byte key ID) over `body`; returns the
    /// cosignature time for type 0x04.
    fn verify(&self, body: &str, payload: &[u8]) -> Result<Option<u64>, NoteError> {
        let invalid = || NoteError::InvalidSignature { name: self.name.clone(), key_id: self.key_id };
        let public_key = UnparsedPublicKey::new(&ED25519, &self.public_key);
        match self.signature_type {
            SignatureType::Ed25519 => {
                if payload.len() != ED25519_SIGNATURE_BYTES {
                    return Err(invalid());
                }
                public_key.verify(body.as_bytes(), payload).map_err(|_| invalid())?;
                Ok(None)
            }
            SignatureType::CosignatureV1 => {
                if payload.len() != 8 + ED25519_SIGNATURE_BYTES {
                    return Err(invalid());
                }
                let (time_bytes, signature) = payload.split_at(8);
                let mut time_array = [0u8; 8];
                time_array.copy_from_slice(time_bytes);
                let time_s = u64::from_be_bytes(time_array);
                if time_s > COSIGNATURE_TIME_S_MAX {
                    return Err(invalid());
                }
                public_key.verify(cosignature_message(time_s, body).as_bytes(), signature).map_err(|_| invalid())?;
                Ok(Some(time_s))
            }
        }
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

/// A signature by a known key that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub name: String,
    pub key_id: u32,
    pub signature_type: SignatureType,
    /// For a cosignature, when the witness made it (seconds since the epoch).
    pub cosigned_at_s: Option<u64>,
}

/// A signature line whose name and key ID match no known key; it was not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSignature {
    pub name: String,
    pub key_id: u32,
}

/// A note whose signatures by known keys all verified, with at least one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The note text, final newline included: trust it only as far as `signatures` go.
    pub body: String,
    /// One entry per known key that signed, in note order.
    pub signatures: Vec<VerifiedSignature>,
    pub unknown: Vec<UnknownSignature>,
}

impl OpenedNote {
    /// The names of the known keys that signed.
    pub fn signer_names(&self) -> Vec<&str> {
        self.signatures.iter().map(|signature| signature.name.as_str()).collect()
    }
}

/// Signs `body` (a note text ending in a newline) with `key` under `name`; returns the
/// signed note: body, blank line, one signature line.
pub fn sign_note(body: &str, name: &str, key: &SigningKey) -> Result<String, NoteError> {
    check_body(body)?;
    check_name(name)?;
    let key_id = key_id(name, SignatureType::Ed25519, key.public_key());
    let signature = key.sign(body.as_bytes())?;
    let note = format!("{body}\n{}", signature_line(name, key_id, &[&signature]));
    check_size(&note)?;
    Ok(note)
}

/// Adds `witness_name`'s `tlog-cosignature` v1 over a signed checkpoint note, made at
/// `time_s` (seconds since the epoch), replacing an earlier cosignature by the same key.
///
/// This only signs: a witness must first verify the log's signature and that the
/// checkpoint is consistent with the last one it cosigned.
pub fn cosign(note: &str, witness_name: &str, key: &SigningKey, time_s: u64) -> Result<String, NoteError> {
    let parsed = parse_note(note.as_bytes())?;
    Checkpoint::parse_body(parsed.body)?;
    check_name(witness_name)?;
    if time_s > COSIGNATURE_TIME_S_MAX {
        return Err(NoteError::InvalidTimestamp { time_s });
    }
    let key_id = key_id(witness_name, SignatureType::CosignatureV1, key.public_key());
    let kept: Vec<&SignatureLine<'_>> =
        parsed.lines.iter().filter(|line| !(line.name == witness_name && line.key_id == key_id)).collect();
    if kept.len() >= NOTE_SIGNATURES_MAX {
        return Err(NoteError::TooManySignatures { max: NOTE_SIGNATURES_MAX });
    }
    let signature = key.sign(cosignature_message(time_s, parsed.body).as_bytes())?;
    let mut cosigned = format!("{}\n", parsed.body);
    for line in kept {
        cosigned.push_str(line.text);
        cosigned.push('\n');
    }
    cosigned.push_str(&signature_line(witness_name, key_id, &[&time_s.to_be_bytes(), &signature]));
    check_size(&cosigned)?;
    Ok(cosigned)
}

/// Parses a signed note and verifies every signature by a key in `verifiers`.
///
/// Fails if the note is malformed or too large, if any signature by a known key does not
/// verify, or if no known key signed it ([`NoteError::Unverified`]).
pub fn open_note(note: &[u8], verifiers: &[Verifier]) -> Result<OpenedNote, NoteError> {
    let parsed = parse_note(note)?;
    let mut signatures: Vec<VerifiedSignature> = Vec::new();
    let mut unknown = Vec::new();
    for line in &parsed.lines {
        let Some(verifier) = find_verifier(verifiers, line.name, line.key_id)? else {
            unknown.push(UnknownSignature { name: line.name.to_owned(), key_id: line.key_id });
            continue;
        };
        // Every signature by a known key is checked, repeated ones included.
        let cosigned_at_s = verifier.verify(parsed.body, &line.payload)?;
        let seen = signatures.iter().any(|known| known.name == line.name && known.key_id == line.key_id);
        if !seen {
            signatures.push(VerifiedSignature {
                name: verifier.name.clone(),
                key_id: verifier.key_id,
                signature_type: verifier.signature_type,
                cosigned_at_s,
            });
        }
    }
    if signatures.is_empty() {
        return Err(NoteError::Unverified { unknown_signers: unknown.iter().map(|u| u.name.clone()).collect() });
    }
    Ok(OpenedNote { body: parsed.body.to_owned(), signatures, unknown })
}

/// A witness's verified cosignature of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub witness: String,
    pub time_s: u64,
}

/// A checkpoint signed by its log, with the witnesses that verifiably cosigned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedCheckpoint {
    pub checkpoint: Checkpoint,
    pub cosignatures: Vec<Cosignature>,
}

/// Opens a checkpoint note: the `log` key (type 0x01) must have signed it, every signature
/// by `log` or by a `witnesses` key (type 0x04) must verify, and the body must be a
/// well-formed checkpoint. The caller then checks the origin and its witness quorum.
pub fn open_checkpoint(note: &[u8], log: &Verifier, witnesses: &[Verifier]) -> Result<OpenedCheckpoint, NoteError> {
    if log.signature_type != SignatureType::Ed25519 {
        return Err(NoteError::InvalidVerifierKey("the log key must be an Ed25519 note key (type 0x01)"));
    }
    if witnesses.iter().any(|witness| witness.signature_type != SignatureType::CosignatureV1) {
        return Err(NoteError::InvalidVerifierKey("witness keys must be cosignature keys (type 0x04)"));
    }
    let mut verifiers = Vec::with_capacity(witnesses.len() + 1);
    verifiers.push(log.clone());
    verifiers.extend_from_slice(witnesses);
    let opened = open_note(note, &verifiers)?;
    let log_signed =
        opened.signatures.iter().any(|signature| signature.name == log.name && signature.key_id == log.key_id);
    if !log_signed {
        return Err(NoteError::MissingLogSignature { name: log.name.clone() });
    }
    let checkpoint = Checkpoint::parse_body(&opened.body)?;
    let cosignatures = opened
        .signatures
        .into_iter()
        .filter_map(|signature| signature.cosigned_at_s.map(|time_s| Cosignature { witness: signature.name, time_s }))
        .collect();
    Ok(OpenedCheckpoint { checkpoint, cosignatures })
}

/// One signature line, decoded but not verified.
struct SignatureLine<'a> {
    /// The whole line without its newline, to copy it unchanged.
    text: &'a str,
    name: &'a str,
    key_id: u32,
    payload: Vec<u8>,
}

struct ParsedNote<'a> {
    body: &'a str,
    lines: Vec<SignatureLine<'a>>,
}

fn parse_note(note: &[u8]) -> Result<ParsedNote<'_>, NoteError> {
    if note.len() > NOTE_BYTES_MAX {
        return Err(NoteError::TooLarge { bytes: note.len(), max: NOTE_BYTES_MAX });
    }
    let text = std::str::from_utf8(note).map_err(|_| NoteError::Malformed("not UTF-8"))?;
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("a control character other than newline"));
    }
    // The text ends at the last blank line; everything after it is signature lines.
    let split = text.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (body, signature_block) = (&text[..split + 1], &text[split + 2..]);
    let Some(signature_block) = signature_block.strip_suffix('\n') else {
        return Err(NoteError::Malformed("no signature line, or the last one does not end with a newline"));
    };
    let mut lines = Vec::new();
    for line in signature_block.split('\n') {
        if lines.len() == NOTE_SIGNATURES_MAX {
            return Err(NoteError::TooManySignatures { max: NOTE_SIGNATURES_MAX });
        }
        lines.push(parse_signature_line(line)?);
    }
    Ok(ParsedNote { body, lines })
}

fn parse_signature_line(line: &str) -> Result<SignatureLine<'_>, NoteError> {
    let rest = line
        .strip_prefix(SIGNATURE_LINE_PREFIX)
        .ok_or(NoteError::Malformed("a signature line does not start with an em dash and a space"))?;
    let (name, signature_base64) =
        rest.split_once(' ').ok_or(NoteError::Malformed("a signature line has no space after the name"))?;
    check_name(name).map_err(|_| NoteError::Malformed("a signature line has an invalid key name"))?;
    let signature =
        STANDARD.decode(signature_base64).map_err(|_| NoteError::Malformed("a signature is not standard base64"))?;
    if signature.len() < 5 {
        return Err(NoteError::Malformed("a signature is shorter than a key ID and one byte"));
    }
    let key_id = u32::from_be_bytes([signature[0], signature[1], signature[2], signature[3]]);
    Ok(SignatureLine { text: line, name, key_id, payload: signature[4..].to_vec() })
}

fn find_verifier<'a>(verifiers: &'a [Verifier], name: &str, key_id: u32) -> Result<Option<&'a Verifier>, NoteError> {
    let mut matching = verifiers.iter().filter(|verifier| verifier.name == name && verifier.key_id == key_id);
    let Some(first) = matching.next() else {
        return Ok(None);
    };
    if matching.any(|other| other != first) {
        return Err(NoteError::AmbiguousKey { name: name.to_owned(), key_id });
    }
    Ok(Some(first))
}

/// `cosignature/v1\ntime <decimal seconds>\n` followed by the checkpoint body.
fn cosignature_message(time_s: u64, body: &str) -> String {
    format!("{COSIGNATURE_HEADER}time {time_s}\n{body}")
}

fn signature_line(name: &str, key_id: u32, parts: &[&[u8]]) -> String {
    let mut signature = key_id.to_be_bytes().to_vec();
    for part in parts {
        signature.extend_from_slice(part);
    }
    format!("{SIGNATURE_LINE_PREFIX}{name} {}\n", STANDARD.encode(signature))
}

/// Key names: non-empty, no Unicode space, no '+' (C2SP), and no control character below
/// U+0020, which no note may contain.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() {
        return Err(NoteError::InvalidName("empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c < ' ') {
        return Err(NoteError::InvalidName("contains a space or a control character"));
    }
    if name.contains('+') {
        return Err(NoteError::InvalidName("contains '+'"));
    }
    Ok(())
}

fn check_body(body: &str) -> Result<(), NoteError> {
    check_size(body)?;
    if !body.ends_with('\n') {
        return Err(NoteError::Malformed("the text does not end with a newline"));
    }
    if body.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("a control character other than newline"));
    }
    Ok(())
}

fn check_size(text: &str) -> Result<(), NoteError> {
    if text.len() > NOTE_BYTES_MAX {
        return Err(NoteError::TooLarge { bytes: text.len(), max: NOTE_BYTES_MAX });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_keys_under_one_name_and_key_id_are_ambiguous() {
        let key = SigningKey::from_seed(&[1; 32]).expect("key");
        let genuine = key.verifier("log").expect("verifier");
        let note = sign_note("text\n", "log", &key).expect("sign");
        // A second key forged to collide on the 4-byte key ID (cheap for an attacker).
        let colliding = Verifier { public_key: [2; 32], ..genuine.clone() };
        assert_eq!(
            open_note(note.as_bytes(), &[genuine.clone(), colliding]),
            Err(NoteError::AmbiguousKey { name: "log".into(), key_id: genuine.key_id() })
        );
        // The same key listed twice is not ambiguous.
        assert!(open_note(note.as_bytes(), &[genuine.clone(), genuine]).is_ok());
    }
}
