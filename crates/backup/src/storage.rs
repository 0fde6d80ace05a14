//! Where repository objects live (`backup-repository.md`, "Storage"). The writer gets an
//! [`ObjectStore`]: it can add objects and read them, never overwrite or delete one.
//! Deletion exists only on [`PruneStore`], and the repository calls it only after a prune
//! record signed with the offline prune key is stored.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Failures of the object storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `put_new` found the name taken: objects are never overwritten.
    #[error("object {0} already exists; repository objects are never overwritten")]
    AlreadyExists(String),
    #[error("object {0} does not exist")]
    NotFound(String),
    /// An object name outside the layout (path traversal, odd characters).
    #[error("invalid object name {0}")]
    InvalidName(String),
    #[error("storage I/O error: {0}")]
    Io(String),
}

/// Append-only object storage: all a backup writer can do.
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores a new object durably; fails with [`StorageError::AlreadyExists`] if the name
    /// is taken, leaving the existing object untouched.
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError>;
    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError>;
    /// `length` bytes from `offset` (a blob inside a pack).
    fn get_range(&self, name: &str, offset: u64, length: usize) -> Result<Vec<u8>, StorageError>;
    /// Opens an object for many reads at offsets (a restore reads a pack's blobs in turn).
    fn open(&self, name: &str) -> Result<Box<dyn ObjectReader>, StorageError>;
    fn size(&self, name: &str) -> Result<u64, StorageError>;
    /// Names under `prefix` (a directory such as `snapshots/`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
}

/// An object opened for reading.
pub trait ObjectReader: Send {
    /// Fills `buffer` from `offset`.
    fn read_exact_at(&mut self, offset: u64, buffer: &mut [u8]) -> Result<(), StorageError>;
}

/// Storage that can also delete: only the prune path holds one.
pub trait PruneStore: ObjectStore {
    fn delete(&self, name: &str) -> Result<(), StorageError>;
}

/// A repository on a directory (a removable disk, a mounted share).
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    root: PathBuf,
}

impl DirectoryStore {
    /// A store over an existing or new directory.
    pub fn new(root: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StorageError::Io(format!("cannot create {}: {e}", root.display())))?;
        Ok(Self { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, StorageError> {
        let valid = !name.is_empty()
            && name.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(StorageError::InvalidName(name.to_string()));
        }
        Ok(self.root.join(name))
    }
}

/// A file of a [`DirectoryStore`], open for reads.
struct OpenFile {
    file: std::fs::File,
    path: PathBuf,
}

impl ObjectReader for OpenFile {
    fn read_exact_at(&mut self, offset: u64, buffer: &mut [u8]) -> Result<(), StorageError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(buffer, offset).map_err(|e| io(&self.path, e))
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            self.file
                .seek(SeekFrom::Start(offset))
                .and_then(|_| self.file.read_exact(buffer))
                .map_err(|e| io(&self.path, e))
        }
    }
}

fn io(path: &Path, error: std::io::Error) -> StorageError {
    if error.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound(path.display().to_string())
    } else {
        StorageError::Io(format!("{}: {error}", path.display()))
    }
}

fn sync_dir(path: &Path) -> Result<(), StorageError> {
    std::fs::File::open(path).and_then(|dir| dir.sync_all()).map_err(|e| io(path, e))
}

impl ObjectStore for DirectoryStore {
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path(name)?;
        if path.exists() {
            return Err(StorageError::AlreadyExists(name.to_string()));
        }
        let dir = path.parent().ok_or_else(|| StorageError::InvalidName(name.to_string()))?;
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        // Write and sync a temporary file, then give it its name without replacing
        // anything: `hard_link` fails if the name exists (even under a race).
        let unique = medvault_crypto::random::array::<8>().map_err(|e| StorageError::Io(e.to_string()))?;
        let temporary = dir.join(format!(".tmp-{}", medvault_base::hex::encode(&unique)));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o444))?;
            }
            std::fs::hard_link(&temporary, &path)
        })();
        let _ = std::fs::remove_file(&temporary);
        match result {
            Ok(()) => sync_dir(dir),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StorageError::AlreadyExists(name.to_string()))
            }
            Err(error) => Err(io(&path, error)),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(name)?;
        std::fs::read(&path).map_err(|e| io(&path, e))
    }

    fn get_range(&self, name: &str, offset: u64, length: usize) -> Result<Vec<u8>, StorageError> {
        let path = self.path(name)?;
        let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        let mut buffer = vec![0u8; length];
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            file.read_exact_at(&mut buffer, offset).map_err(|e| io(&path, e))?;
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = file;
            file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut buffer)).map_err(|e| io(&path, e))?;
        }
        Ok(buffer)
    }

    fn open(&self, name: &str) -> Result<Box<dyn ObjectReader>, StorageError> {
        let path = self.path(name)?;
        let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        Ok(Box::new(OpenFile { file, path }))
    }

    fn size(&self, name: &str) -> Result<u64, StorageError> {
        let path = self.path(name)?;
        std::fs::metadata(&path).map(|m| m.len()).map_err(|e| io(&path, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        let mut pending = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(relative) = pending.pop() {
            let dir = self.root.join(&relative);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(io(&dir, error)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io(&dir, e))?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if file_name.starts_with(".tmp-") {
                    continue;
                }
                let name = format!("{relative}/{file_name}");
                if entry.file_type().map_err(|e| io(&dir, e))?.is_dir() {
                    pending.push(name);
                } else {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

impl PruneStore for DirectoryStore {
    fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path(name)?;
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_added_never_replaced() {
        let dir = medvault_testkit::TempDir::new("objects");
        let store = DirectoryStore::new(dir.path()).expect("store");
        store.put_new("packs/ab/abcd", b"first").expect("put");
        let error = store.put_new("packs/ab/abcd", b"second").expect_err("no overwrite");
        assert!(matches!(error, StorageError::AlreadyExists(_)), "{error}");
        assert_eq!(store.get("packs/ab/abcd").expect("get"), b"first");
        assert_eq!(store.get_range("packs/ab/abcd", 1, 3).expect("range"), b"irs");
        assert_eq!(store.list("packs/").expect("list"), vec!["packs/ab/abcd".to_string()]);
        for bad in ["../x", "packs/../../x", "/etc/passwd", "a//b", "a b"] {
            assert!(matches!(store.put_new(bad, b"x"), Err(StorageError::InvalidName(_))), "{bad}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("packs/ab/abcd")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o444, "objects are read-only");
        }
    }
}
