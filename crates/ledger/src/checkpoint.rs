//! The C2SP `tlog-checkpoint` body (`docs/format/checkpoint.md`): origin, tree size,
//! root hash and optional extension lines, each ending in a newline.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::hash::{Hash, EMPTY_ROOT};
use crate::note::NOTE_BYTES_MAX;
use crate::NoteError;

/// A tree head: which log, how many leaves, and the root over them. Always well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, NoteError> {
        Self::with_extensions(origin, size, root, Vec::new())
    }

    /// A checkpoint with extension lines (not recommended by C2SP: monitors cannot audit them).
    ///
    /// Refuses an empty origin or extension line, a control character in any of them, and
    /// a size-0 tree whose root is not the empty-tree root.
    pub fn with_extensions(origin: &str, size: u64, root: Hash, extensions: Vec<String>) -> Result<Self, NoteError> {
        if !is_line(origin) {
            return Err(NoteError::MalformedCheckpoint("the origin must be a non-empty line"));
        }
        if !extensions.iter().all(|extension| is_line(extension)) {
            return Err(NoteError::MalformedCheckpoint("extension lines must be non-empty lines"));
        }
        if size == 0 && root != EMPTY_ROOT {
            return Err(NoteError::MalformedCheckpoint("a tree of size 0 has the root SHA-256(\"\")"));
        }
        Ok(Self { origin: origin.to_owned(), size, root, extensions })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> &Hash {
        &self.root
    }

    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// `<origin>\n<size>\n<base64 root>\n` followed by each extension line and a newline.
    pub fn to_body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        body
    }

    /// Parses a body strictly: exactly what [`to_body`](Self::to_body) produces, nothing else.
    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        if body.len() > NOTE_BYTES_MAX {
            return Err(NoteError::TooLarge { bytes: body.len(), max: NOTE_BYTES_MAX });
        }
        let Some(lines) = body.strip_suffix('\n') else {
            return Err(NoteError::MalformedCheckpoint("the body does not end with a newline"));
        };
        let mut lines = lines.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(NoteError::MalformedCheckpoint("fewer than three lines"));
        };
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        let extensions = lines.map(str::to_owned).collect();
        Self::with_extensions(origin, size, root, extensions)
    }
}

/// A non-empty line: no newline nor any other control character below U+0020.
fn is_line(line: &str) -> bool {
    !line.is_empty() && line.chars().all(|c| c >= ' ')
}

/// ASCII decimal without sign or leading zeros (`0` alone for the empty tree), within u64.
fn parse_size(line: &str) -> Result<u64, NoteError> {
    let canonical =
        !line.is_empty() && line.bytes().all(|byte| byte.is_ascii_digit()) && (line == "0" || !line.starts_with('0'));
    if !canonical {
        return Err(NoteError::MalformedCheckpoint("the tree size is not a decimal number without leading zeros"));
    }
    line.parse().map_err(|_| NoteError::MalformedCheckpoint("the tree size does not fit in 64 bits"))
}

/// Standard base64 with padding, canonical, of exactly 32 bytes.
fn parse_root(line: &str) -> Result<Hash, NoteError> {
    let bytes =
        STANDARD.decode(line).map_err(|_| NoteError::MalformedCheckpoint("the root hash is not standard base64"))?;
    let root: Hash = bytes.try_into().map_err(|_| NoteError::MalformedCheckpoint("the root hash is not 32 bytes"))?;
    // The engine refuses non-zero trailing bits; re-encoding makes canonicity explicit.
    if STANDARD.encode(root) != line {
        return Err(NoteError::MalformedCheckpoint("the root hash is not canonical base64"));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    #[test]
    fn round_trips() {
        let root = leaf_hash(b"x");
        for checkpoint in [
            Checkpoint::new("medvault.example/ledger", 20_852_163, root).expect("valid"),
            Checkpoint::new("go.sum database tree", u64::MAX, root).expect("valid"),
            Checkpoint::new("o", 0, EMPTY_ROOT).expect("valid"),
            Checkpoint::with_extensions("o", 1, root, vec!["ext 1".into(), "— ext 2".into()]).expect("valid"),
        ] {
            let body = checkpoint.to_body();
            assert_eq!(Checkpoint::parse_body(&body).expect("parses"), checkpoint);
        }
        assert_eq!(
            Checkpoint::new("example.com/behind-the-sofa", 20_852_163, root).expect("valid").to_body(),
            format!("example.com/behind-the-sofa\n20852163\n{}\n", STANDARD.encode(root))
        );
    }

    #[test]
    fn refuses_anything_malformed() {
        let root = STANDARD.encode(leaf_hash(b"x"));
        let empty = STANDARD.encode(EMPTY_ROOT);
        let long_root = STANDARD.encode([7u8; 33]);
        let unpadded = root.trim_end_matches('=').to_owned();
        let mut trailing_bits = root.clone().into_bytes();
        trailing_bits[42] = b'B'; // 'A' with a non-zero bit past the 256th
        let trailing_bits = String::from_utf8(trailing_bits).expect("ascii");
        let bodies = [
            String::new(),
            "\n".to_owned(),
            format!("o\n1\n{root}"),
            "o\n1\n".to_owned(),
            format!("\n1\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n 1\n{root}\n"),
            format!("o\n1.0\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n1\n{unpadded}\n"),
            format!("o\n1\n{long_root}\n"),
            format!("o\n1\n{trailing_bits}\n"),
            format!("o\n1\n{}\n", root.replace('=', "")),
            format!("o\n1\n {root}\n"),
            format!("o\n1\n{root}\n\n"),
            format!("o\n1\n{root}\next\n\n"),
            format!("o\r\n1\n{root}\n"),
            format!("o\t\n1\n{root}\n"),
            format!("o\n1\n{root}\nbad\u{1}ext\n"),
            format!("o\n0\n{root}\n"),
            format!("o\n1\n{}\n", hex(&[1u8; 32])),
        ];
        for body in bodies {
            assert!(Checkpoint::parse_body(&body).is_err(), "accepted {body:?}");
        }
        assert!(Checkpoint::parse_body(&format!("o\n0\n{empty}\n")).is_ok());
        assert!(Checkpoint::new("", 1, [0; 32]).is_err());
        assert!(Checkpoint::new("a\nb", 1, [0; 32]).is_err());
        assert!(Checkpoint::with_extensions("o", 1, [0; 32], vec![String::new()]).is_err());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
