//! The master key: the root of the hierarchy in `docs/format/key-hierarchy.md`.
//!
//! It is supplied by a [`MasterKeySource`], so a hardware module or key service can take
//! the place of the key file or passphrase without changing the layers above.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::{CryptoError, Secret32};

const KEY_FILE_PREFIX: &str = "medvault-master-key v1 ";

/// Argon2id parameters for a passphrase-derived master key, written out (RFC 9106).
pub const PASSPHRASE_KDF_MEMORY_KIB: u32 = 65_536;
pub const PASSPHRASE_KDF_ITERATIONS: u32 = 3;
pub const PASSPHRASE_KDF_PARALLELISM: u32 = 1;
pub const PASSPHRASE_KDF_DESCRIPTION: &str = "argon2id;v=19;m=65536;t=3;p=1";

/// The master key. Never logged, never written except by [`MasterKey::create_key_file`].
#[derive(Debug)]
pub struct MasterKey(Secret32);

/// Where the master key comes from.
pub trait MasterKeySource: std::fmt::Debug {
    /// Produces the master key of the store whose passphrase salt is `salt` (unused by
    /// sources that do not derive).
    fn master_key(&self, salt: Option<&[u8]>) -> Result<MasterKey, CryptoError>;
    /// The name recorded in the store's `meta.master_key_source`.
    fn kind(&self) -> &'static str;
}

/// A key file with owner-only permissions.
#[derive(Debug, Clone)]
pub struct KeyFile {
    pub path: PathBuf,
}

/// A passphrase stretched with Argon2id.
pub struct Passphrase(pub Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

impl MasterKey {
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(Secret32::random()?))
    }

    pub fn expose_secret(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }

    /// Writes a new key file with mode 0600; refuses to overwrite an existing file.
    pub fn create_key_file(&self, path: &Path) -> Result<(), CryptoError> {
        let error = |reason: String| CryptoError::KeyFile { path: path.display().to_string(), reason };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| error(format!("cannot create: {e}")))?;
        let encoded = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.expose_secret()));
        let line = Zeroizing::new(format!("{KEY_FILE_PREFIX}{}\n", encoded.as_str()));
        file.write_all(line.as_bytes()).map_err(|e| error(format!("cannot write: {e}")))?;
        file.sync_all().map_err(|e| error(format!("cannot sync: {e}")))?;
        Ok(())
    }

    pub fn from_passphrase(passphrase: &str, salt: &[u8]) -> Result<Self, CryptoError> {
        let params = argon2::Params::new(
            PASSPHRASE_KDF_MEMORY_KIB,
            PASSPHRASE_KDF_ITERATIONS,
            PASSPHRASE_KDF_PARALLELISM,
            Some(32),
        )
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut output = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.as_bytes(), salt, output.as_mut_slice())
            .map_err(|e| CryptoError::Kdf(e.to_string()))?;
        Ok(Self(Secret32::from_bytes(*output)))
    }
}

impl MasterKeySource for KeyFile {
    fn master_key(&self, _salt: Option<&[u8]>) -> Result<MasterKey, CryptoError> {
        let error = |reason: String| CryptoError::KeyFile { path: self.path.display().to_string(), reason };
        let metadata = std::fs::metadata(&self.path).map_err(|e| error(format!("cannot read: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(error(format!(
                    "permissions {:o} let other users read it; run `chmod 600` on it",
                    mode & 0o777
                )));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(&self.path).map_err(|e| error(format!("cannot read: {e}")))?);
        let encoded = text
            .trim_end()
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or_else(|| error("not a medvault master key file (bad header)".into()))?;
        let mut bytes = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .map_err(|_| error("the key is not valid base64url".into()))?,
        );
        let secret =
            Secret32::from_slice_zeroizing(&mut bytes).ok_or_else(|| error("the key is not 32 bytes".into()))?;
        Ok(MasterKey(secret))
    }

    fn kind(&self) -> &'static str {
        "key-file"
    }
}

impl MasterKeySource for Passphrase {
    fn master_key(&self, salt: Option<&[u8]>) -> Result<MasterKey, CryptoError> {
        let salt = salt.ok_or(CryptoError::Kdf("the store records no passphrase salt".into()))?;
        MasterKey::from_passphrase(&self.0, salt)
    }

    fn kind(&self) -> &'static str {
        "passphrase"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_refuses_loose_permissions() {
        let dir = std::env::temp_dir().join(format!("mv-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("master.key");
        let _ = std::fs::remove_file(&path);
        let key = MasterKey::generate().expect("random");
        key.create_key_file(&path).expect("create");
        assert!(key.create_key_file(&path).is_err(), "must refuse to overwrite");
        let read = KeyFile { path: path.clone() }.master_key(None).expect("read");
        assert_eq!(read.expose_secret(), key.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let error = KeyFile { path: path.clone() }.master_key(None).expect_err("loose permissions");
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn passphrase_derivation_depends_on_salt_and_passphrase() {
        let a = MasterKey::from_passphrase("correct horse", b"0123456789abcdef").expect("kdf");
        let b = MasterKey::from_passphrase("correct horse", b"0123456789abcdef").expect("kdf");
        let c = MasterKey::from_passphrase("correct horse", b"fedcba9876543210").expect("kdf");
        let d = MasterKey::from_passphrase("correct horsf", b"0123456789abcdef").expect("kdf");
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), c.expose_secret());
        assert_ne!(a.expose_secret(), d.expose_secret());
        assert_eq!(format!("{a:?}"), "MasterKey(Secret32([redacted]))");
    }
}
