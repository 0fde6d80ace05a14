//! The signed texts of a repository (`backup-repository.md`, "Signed notes"): config,
//! manifests and erasure records, as C2SP signed notes by the store's log key, parsed
//! strictly: fields in order, each once, nothing else.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use medvault_base::hex;
use medvault_ledger::Verifier;

use crate::pack::BlobRef;
use crate::BackupError;

pub const CONFIG_DOMAIN: &str = "medvault/v1/backup-config";
pub const MANIFEST_DOMAIN: &str = "medvault/v1/backup-manifest";
pub const ERASURE_DOMAIN: &str = "medvault/v1/backup-erasure";
pub const PRUNE_DOMAIN: &str = "medvault/v1/backup-prune";

/// The repository's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub repository_id: [u8; 16],
    pub store_id: [u8; 16],
    pub log_key: String,
    pub recovery_public: [u8; 32],
    pub prune_public: [u8; 32],
    /// `Kid || Km` wrapped to the recovery key.
    pub wrapped_keys: Vec<u8>,
    pub pack_target_bytes: u64,
}

impl Config {
    pub fn body(&self) -> String {
        format!(
            "{CONFIG_DOMAIN}\nversion 1\nrepository {}\nstore {}\nlog-key {}\nrecovery-key {}\nprune-key {}\nkeys {}\n\
             chunk-min-bytes {}\nchunk-avg-bytes {}\nchunk-max-bytes {}\npack-target-bytes {}\n",
            hex::encode(&self.repository_id),
            hex::encode(&self.store_id),
            self.log_key,
            STANDARD.encode(self.recovery_public),
            STANDARD.encode(self.prune_public),
            STANDARD.encode(&self.wrapped_keys),
            crate::chunker::CHUNK_MIN_BYTES,
            crate::chunker::CHUNK_AVG_BYTES,
            crate::chunker::CHUNK_MAX_BYTES,
            self.pack_target_bytes,
        )
    }

    pub fn parse(body: &str) -> Result<Self, BackupError> {
        let mut fields = Fields::new(body, CONFIG_DOMAIN)?;
        if fields.next("version")? != "1" {
            return Err(BackupError::Integrity("unsupported repository version".into()));
        }
        let config = Self {
            repository_id: fixed(&hex_field(fields.next("repository")?)?)?,
            store_id: fixed(&hex_field(fields.next("store")?)?)?,
            log_key: fields.next("log-key")?.to_string(),
            recovery_public: fixed(&base64_field(fields.next("recovery-key")?)?)?,
            prune_public: fixed(&base64_field(fields.next("prune-key")?)?)?,
            wrapped_keys: base64_field(fields.next("keys")?)?,
            pack_target_bytes: {
                for (name, value) in [
                    ("chunk-min-bytes", crate::chunker::CHUNK_MIN_BYTES),
                    ("chunk-avg-bytes", crate::chunker::CHUNK_AVG_BYTES),
                    ("chunk-max-bytes", crate::chunker::CHUNK_MAX_BYTES),
                ] {
                    if fields.next(name)? != value.to_string() {
                        return Err(BackupError::Integrity(format!("unsupported {name}")));
                    }
                }
                number(fields.next("pack-target-bytes")?)?
            },
        };
        fields.end()?;
        Ok(config)
    }
}

/// One snapshot, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub repository_id: [u8; 16],
    /// The parent snapshot's object name, if any.
    pub parent: Option<String>,
    pub tree_size: u64,
    pub root: [u8; 32],
    pub last_leaf_ms: i64,
    /// The signed checkpoint note of `tree_size`.
    pub checkpoint: String,
    pub snapshot_root: BlobRef,
    /// Every pack the snapshot uses: (pack id, SHA-256 of the pack file), sorted.
    pub packs: Vec<([u8; 32], [u8; 32])>,
}

impl Manifest {
    pub fn body(&self) -> String {
        let mut body = format!(
            "{MANIFEST_DOMAIN}\nrepository {}\nparent {}\ntree-size {}\nroot {}\nlast-leaf-ms {}\ncheckpoint {}\nsnapshot-root {}\npacks {}\n",
            hex::encode(&self.repository_id),
            self.parent.as_deref().unwrap_or("none"),
            self.tree_size,
            STANDARD.encode(self.root),
            self.last_leaf_ms,
            STANDARD.encode(self.checkpoint.as_bytes()),
            self.snapshot_root.to_hex(),
            self.packs.len(),
        );
        for (id, sha256) in &self.packs {
            body.push_str(&format!("pack {} {}\n", hex::encode(id), hex::encode(sha256)));
        }
        body
    }

    pub fn parse(body: &str) -> Result<Self, BackupError> {
        let mut fields = Fields::new(body, MANIFEST_DOMAIN)?;
        let repository_id = fixed(&hex_field(fields.next("repository")?)?)?;
        let parent = match fields.next("parent")? {
            "none" => None,
            name if name.starts_with("snapshots/") => Some(name.to_string()),
            _ => return Err(BackupError::Integrity("a manifest's parent is not a snapshot name".into())),
        };
        let tree_size = number(fields.next("tree-size")?)?;
        let root = fixed(&base64_field(fields.next("root")?)?)?;
        let last_leaf_ms = fields
            .next("last-leaf-ms")?
            .parse::<i64>()
            .map_err(|_| BackupError::Integrity("a manifest's last-leaf-ms is not a number".into()))?;
        let checkpoint = String::from_utf8(base64_field(fields.next("checkpoint")?)?)
            .map_err(|_| BackupError::Integrity("a manifest's checkpoint is not text".into()))?;
        let snapshot_root = BlobRef::from_hex(fields.next("snapshot-root")?)?;
        let count = number(fields.next("packs")?)?;
        let mut packs = Vec::new();
        for _ in 0..count {
            let value = fields.next("pack")?;
            let (id, sha256) = value
                .split_once(' ')
                .ok_or_else(|| BackupError::Integrity("a manifest's pack line is malformed".into()))?;
            packs.push((fixed(&hex_field(id)?)?, fixed(&hex_field(sha256)?)?));
        }
        fields.end()?;
        if !packs.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            return Err(BackupError::Integrity("a manifest's packs are not sorted and unique".into()));
        }
        Ok(Self { repository_id, parent, tree_size, root, last_leaf_ms, checkpoint, snapshot_root, packs })
    }
}

/// A destroyed patient key, recorded so that every restore erases it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub repository_id: [u8; 16],
    pub key_id: u64,
    pub compartment: [u8; 32],
    pub destroyed_ms: i64,
}

impl Erasure {
    pub fn body(&self) -> String {
        format!(
            "{ERASURE_DOMAIN}\nrepository {}\nkey-id {}\ncompartment {}\ndestroyed-ms {}\n",
            hex::encode(&self.repository_id),
            self.key_id,
            hex::encode(&self.compartment),
            self.destroyed_ms
        )
    }

    pub fn parse(body: &str) -> Result<Self, BackupError> {
        let mut fields = Fields::new(body, ERASURE_DOMAIN)?;
        let erasure = Self {
            repository_id: fixed(&hex_field(fields.next("repository")?)?)?,
            key_id: number(fields.next("key-id")?)?,
            compartment: fixed(&hex_field(fields.next("compartment")?)?)?,
            destroyed_ms: fields
                .next("destroyed-ms")?
                .parse()
                .map_err(|_| BackupError::Integrity("an erasure's time is not a number".into()))?,
        };
        fields.end()?;
        Ok(erasure)
    }
}

/// Opens a signed note with the pinned log key and returns its body.
pub fn open_signed(note: &[u8], log_key: &Verifier, what: &str) -> Result<String, BackupError> {
    if note.len() > medvault_base::limits::BACKUP_OBJECT_BYTES_MAX {
        return Err(BackupError::Integrity(format!(
            "the {what} is larger than {} bytes",
            medvault_base::limits::BACKUP_OBJECT_BYTES_MAX
        )));
    }
    let opened = medvault_ledger::open_note(note, std::slice::from_ref(log_key))
        .map_err(|e| BackupError::Forged(format!("the {what} is not signed by the store's log key: {e}")))?;
    Ok(opened.body)
}

struct Fields<'a> {
    lines: std::str::Lines<'a>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a str, domain: &str) -> Result<Self, BackupError> {
        let mut lines = body.lines();
        if lines.next() != Some(domain) || !body.ends_with('\n') {
            return Err(BackupError::Integrity(format!("not a {domain} text")));
        }
        Ok(Self { lines })
    }

    fn next(&mut self, name: &str) -> Result<&'a str, BackupError> {
        let line = self.lines.next().ok_or_else(|| BackupError::Integrity(format!("missing field {name}")))?;
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| BackupError::Integrity(format!("expected field {name}, found another")))
    }

    fn end(mut self) -> Result<(), BackupError> {
        match self.lines.next() {
            None => Ok(()),
            Some(_) => Err(BackupError::Integrity("unexpected field after the last one".into())),
        }
    }
}

fn hex_field(value: &str) -> Result<Vec<u8>, BackupError> {
    hex::decode(value).ok_or_else(|| BackupError::Integrity("a field is not hex".into()))
}

fn base64_field(value: &str) -> Result<Vec<u8>, BackupError> {
    STANDARD.decode(value).map_err(|_| BackupError::Integrity("a field is not base64".into()))
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], BackupError> {
    bytes.try_into().map_err(|_| BackupError::Integrity(format!("a field is not {N} bytes")))
}

fn number(value: &str) -> Result<u64, BackupError> {
    if value.len() > 1 && value.starts_with('0') {
        return Err(BackupError::Integrity("a number with a leading zero".into()));
    }
    value.parse().map_err(|_| BackupError::Integrity("a field is not a number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_parse_strictly() {
        let manifest = Manifest {
            repository_id: [1; 16],
            parent: Some("snapshots/00000000000000000005-0123456789abcdef".into()),
            tree_size: 9,
            root: [2; 32],
            last_leaf_ms: 1_767_225_600_000,
            checkpoint: "origin\n9\nroot\n\n— sig\n".into(),
            snapshot_root: BlobRef {
                id: [3; 32],
                pack: [4; 32],
                offset: 5,
                stored_length: 6,
                raw_length: 7,
                blob_type: crate::keys::BlobType::Tree,
                compression: 0,
            },
            packs: vec![([4; 32], [5; 32]), ([6; 32], [7; 32])],
        };
        let body = manifest.body();
        assert_eq!(Manifest::parse(&body).expect("parse"), manifest);
        assert!(Manifest::parse(&body.replace("tree-size 9", "tree-size 09")).is_err());
        assert!(Manifest::parse(&body.replace("packs 2", "packs 3")).is_err());
        assert!(Manifest::parse(&format!("{body}extra 1\n")).is_err());
        assert!(Manifest::parse(&body.replacen(MANIFEST_DOMAIN, CONFIG_DOMAIN, 1)).is_err());
    }
}
