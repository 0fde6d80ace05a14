//! The store's keys in memory: the KEK, the index key, and a bounded cache of unwrapped
//! data keys, looked up by key id (reads) and by compartment token (writes).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use medvault_base::limits::{COMPARTMENT_TOKEN_CACHE_ENTRIES_MAX, DATA_KEY_CACHE_ENTRIES_MAX};
use medvault_crypto::{IndexKey, KeyEncryptionKey, KeyPurpose, Sealer, WrapContext};

use crate::engine::{Engine, KeyRow, ResourceKey};
use crate::StoreError;

/// The compartment a version is sealed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Compartment {
    /// Resources outside any patient compartment.
    Shared,
    Patient(String),
}

#[derive(Debug)]
pub struct Keyring {
    store_id: [u8; 16],
    kek: KeyEncryptionKey,
    index: IndexKey,
    shared_key_id: u64,
    shared: Arc<Sealer>,
    cache: RwLock<Cache>,
    /// Compartment tokens of patient ids seen lately: every audited read names its patient,
    /// and an HMAC costs more than a lookup. Emptied when it reaches
    /// `COMPARTMENT_TOKEN_CACHE_ENTRIES_MAX`.
    tokens: RwLock<HashMap<Box<str>, [u8; 32]>>,
    /// The Ed25519 seed that signs ledger checkpoints.
    ledger_seed: medvault_crypto::Secret32,
    /// Only ever true in a benchmark build (`danger-benchmark-unsealed`).
    danger_unsealed: bool,
}

#[derive(Debug, Default)]
struct Cache {
    /// A data key's sealer and its compartment token.
    by_id: HashMap<u64, (Arc<Sealer>, [u8; 32])>,
    by_compartment: HashMap<[u8; 32], u64>,
}

/// The key that seals a write: an existing one, or a new one the write must insert.
#[derive(Debug, Clone)]
pub struct KeyChoice {
    pub key_id: Option<u64>,
    pub compartment_token: [u8; 32],
    pub sealer: Arc<Sealer>,
    /// Wrapped bytes of a new key (when `key_id` is `None`).
    pub new_wrapped: Option<Vec<u8>>,
}

impl Keyring {
    /// Unwraps the index and shared data keys; a wrong master key fails here.
    pub fn load(engine: &dyn Engine, store_id: [u8; 16], kek: KeyEncryptionKey) -> Result<Self, StoreError> {
        Self::load_with(engine, store_id, kek, false)
    }

    /// A keyring whose new versions are written unsealed, so a benchmark can measure sealing.
    #[cfg(feature = "danger-benchmark-unsealed")]
    pub fn danger_load_unsealed_for_benchmark(
        engine: &dyn Engine,
        store_id: [u8; 16],
        kek: KeyEncryptionKey,
    ) -> Result<Self, StoreError> {
        Self::load_with(engine, store_id, kek, true)
    }

    fn load_with(
        engine: &dyn Engine,
        store_id: [u8; 16],
        kek: KeyEncryptionKey,
        danger_unsealed: bool,
    ) -> Result<Self, StoreError> {
        let index_row = single_key(engine, KeyPurpose::Index)?;
        let shared_row = single_key(engine, KeyPurpose::SharedData)?;
        let ledger_row = single_key(engine, KeyPurpose::LedgerSigning)?;
        let unwrap = |row: &KeyRow, purpose| {
            let wrapped = row.wrapped.as_deref().ok_or(StoreError::Corrupt("a store key was destroyed".into()))?;
            kek.unwrap(wrapped, &WrapContext { store_id: &store_id, purpose, compartment: &[] })
                .map_err(|_| StoreError::WrongMasterKey)
        };
        let index = IndexKey::new(&unwrap(&index_row, KeyPurpose::Index)?);
        let shared_key = unwrap(&shared_row, KeyPurpose::SharedData)?;
        let ledger_seed = unwrap(&ledger_row, KeyPurpose::LedgerSigning)?;
        Ok(Self {
            ledger_seed,
            store_id,
            index,
            shared_key_id: shared_row.key_id,
            shared: Arc::new(make_sealer(&shared_key, danger_unsealed)),
            kek,
            cache: RwLock::new(Cache::default()),
            tokens: RwLock::new(HashMap::new()),
            danger_unsealed,
        })
    }

    pub fn store_id(&self) -> &[u8; 16] {
        &self.store_id
    }

    /// A store-wide key (no compartment) of `purpose`, wrapped by the KEK.
    pub fn wrap_store_key(&self, key: &medvault_crypto::Secret32, purpose: KeyPurpose) -> Result<Vec<u8>, StoreError> {
        Ok(self.kek.wrap(key, &WrapContext { store_id: &self.store_id, purpose, compartment: &[] })?)
    }

    /// The sealer of a store-wide key row of `purpose` (the audit key).
    pub fn store_key_sealer(&self, row: &KeyRow, purpose: KeyPurpose) -> Result<Arc<Sealer>, StoreError> {
        let wrapped = row.wrapped.as_deref().ok_or(StoreError::Corrupt("a store key was destroyed".into()))?;
        let key = self
            .kek
            .unwrap(wrapped, &WrapContext { store_id: &self.store_id, purpose, compartment: &[] })
            .map_err(|_| StoreError::Integrity(format!("store key {} does not unwrap", row.key_id)))?;
        // Audit blocks are always sealed, also in a benchmark store that writes records unsealed.
        Ok(Arc::new(Sealer::new(&key)))
    }

    /// Unwraps a store-wide key row of `purpose` (a search key, `index-token.md`).
    pub(crate) fn unwrap_store_key(
        &self,
        row: &KeyRow,
        purpose: KeyPurpose,
    ) -> Result<medvault_crypto::Secret32, StoreError> {
        let wrapped = row.wrapped.as_deref().ok_or(StoreError::KeyDestroyed)?;
        self.kek
            .unwrap(wrapped, &WrapContext { store_id: &self.store_id, purpose, compartment: &[] })
            .map_err(|_| StoreError::Integrity(format!("store key {} does not unwrap", row.key_id)))
    }

    /// The checkpoint signing key (expanded from its seed on each use).
    pub fn ledger_signing_key(&self) -> Result<medvault_ledger::SigningKey, StoreError> {
        medvault_ledger::SigningKey::from_seed(self.ledger_seed.expose_secret())
            .map_err(|e| StoreError::Crypto(format!("ledger signing key: {e}")))
    }

    /// A backup repository key derived from the index key (`backup-repository.md`).
    pub(crate) fn backup_key(&self, label: &str) -> medvault_crypto::Secret32 {
        medvault_crypto::Secret32::from_bytes(self.index.mac(&[b"backup\0", label.as_bytes(), b"\0v1"]))
    }

    pub fn resource_key(&self, resource_type: &str, id: &str) -> ResourceKey {
        let mac = self.index.mac(&[b"resource\0", resource_type.as_bytes(), b"\0", id.as_bytes()]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&mac[..16]);
        key
    }

    pub fn compartment_token(&self, patient_id: &str) -> [u8; 32] {
        if let Some(token) = self.tokens.read().ok().and_then(|tokens| tokens.get(patient_id).copied()) {
            return token;
        }
        let token = self.index.mac(&[b"compartment\0Patient\0", patient_id.as_bytes()]);
        if let Ok(mut tokens) = self.tokens.write() {
            if tokens.len() >= COMPARTMENT_TOKEN_CACHE_ENTRIES_MAX {
                tokens.clear();
            }
            tokens.insert(patient_id.into(), token);
        }
        token
    }

    /// The sealer for an existing key id (reads).
    pub fn sealer_by_id(&self, engine: &dyn Engine, key_id: u64) -> Result<Arc<Sealer>, StoreError> {
        self.sealer_and_compartment(engine, key_id).map(|(sealer, _)| sealer)
    }

    /// The sealer for an existing key id and the patient compartment it seals (`None`
    /// for the shared key): what a version is sealed under says whose record it is.
    pub fn sealer_and_compartment(
        &self,
        engine: &dyn Engine,
        key_id: u64,
    ) -> Result<(Arc<Sealer>, Option<[u8; 32]>), StoreError> {
        if key_id == self.shared_key_id {
            return Ok((self.shared.clone(), None));
        }
        if let Some((sealer, compartment)) = self.cache.read().map_err(|_| StoreError::Poisoned)?.by_id.get(&key_id) {
            return Ok((sealer.clone(), Some(*compartment)));
        }
        let row = engine.key_by_id(key_id)?.ok_or(StoreError::KeyDestroyed)?;
        let compartment =
            row.compartment.ok_or(StoreError::Corrupt(format!("data key {key_id} has no compartment")))?;
        let sealer = self.unwrap_patient_key(&row, &compartment)?;
        self.remember(key_id, compartment, sealer.clone())?;
        Ok((sealer, Some(compartment)))
    }

    /// The keyed token of a practitioner in care relationships (`docs/format/accounts.md`).
    pub fn practitioner_token(&self, practitioner_id: &str) -> [u8; 32] {
        self.index.mac(&[b"care\0Practitioner\0", practitioner_id.as_bytes()])
    }

    /// Wraps a user's secret (a TOTP key) under the KEK, bound to the user and its epoch.
    pub fn wrap_user_secret(&self, secret: &medvault_crypto::Secret32, binding: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self.kek.wrap(
            secret,
            &WrapContext { store_id: &self.store_id, purpose: KeyPurpose::UserSecret, compartment: binding },
        )?)
    }

    pub fn unwrap_user_secret(&self, wrapped: &[u8], binding: &[u8]) -> Result<medvault_crypto::Secret32, StoreError> {
        self.kek
            .unwrap(
                wrapped,
                &WrapContext { store_id: &self.store_id, purpose: KeyPurpose::UserSecret, compartment: binding },
            )
            .map_err(|_| StoreError::Integrity("a user secret does not unwrap".into()))
    }

    /// The shared data key's sealer, for account records that are not a patient's.
    pub fn shared_sealer(&self) -> Arc<Sealer> {
        self.shared.clone()
    }

    /// The key that seals a new version in `compartment`, creating one if the patient has none.
    pub fn key_for_write(&self, engine: &dyn Engine, compartment: &Compartment) -> Result<KeyChoice, StoreError> {
        let patient_id = match compartment {
            Compartment::Shared => {
                return Ok(KeyChoice {
                    key_id: Some(self.shared_key_id),
                    compartment_token: [0; 32],
                    sealer: self.shared.clone(),
                    new_wrapped: None,
                })
            }
            Compartment::Patient(patient_id) => patient_id,
        };
        let token = self.compartment_token(patient_id);
        {
            let cache = self.cache.read().map_err(|_| StoreError::Poisoned)?;
            if let Some(key_id) = cache.by_compartment.get(&token) {
                if let Some((sealer, _)) = cache.by_id.get(key_id) {
                    return Ok(KeyChoice {
                        key_id: Some(*key_id),
                        compartment_token: token,
                        sealer: sealer.clone(),
                        new_wrapped: None,
                    });
                }
            }
        }
        if let Some(row) = engine.key_by_compartment(&token)? {
            let sealer = self.unwrap_patient_key(&row, &token)?;
            self.remember(row.key_id, token, sealer.clone())?;
            return Ok(KeyChoice { key_id: Some(row.key_id), compartment_token: token, sealer, new_wrapped: None });
        }
        let key = medvault_crypto::Secret32::random()?;
        let wrapped = self.kek.wrap(
            &key,
            &WrapContext { store_id: &self.store_id, purpose: KeyPurpose::PatientData, compartment: &token },
        )?;
        Ok(KeyChoice {
            key_id: None,
            compartment_token: token,
            sealer: Arc::new(self.sealer(&key)),
            new_wrapped: Some(wrapped),
        })
    }

    /// Records the id a new key received when its write committed.
    pub fn remember(&self, key_id: u64, compartment_token: [u8; 32], sealer: Arc<Sealer>) -> Result<(), StoreError> {
        let mut cache = self.cache.write().map_err(|_| StoreError::Poisoned)?;
        if cache.by_id.len() >= DATA_KEY_CACHE_ENTRIES_MAX {
            cache.by_id.clear();
            cache.by_compartment.clear();
        }
        cache.by_id.insert(key_id, (sealer, compartment_token));
        cache.by_compartment.insert(compartment_token, key_id);
        Ok(())
    }

    fn unwrap_patient_key(&self, row: &KeyRow, compartment: &[u8; 32]) -> Result<Arc<Sealer>, StoreError> {
        let wrapped = row.wrapped.as_deref().ok_or(StoreError::KeyDestroyed)?;
        let key = self
            .kek
            .unwrap(wrapped, &WrapContext { store_id: &self.store_id, purpose: KeyPurpose::PatientData, compartment })
            .map_err(|_| StoreError::Integrity(format!("data key {} does not unwrap", row.key_id)))?;
        Ok(Arc::new(self.sealer(&key)))
    }

    fn sealer(&self, key: &medvault_crypto::Secret32) -> Sealer {
        make_sealer(key, self.danger_unsealed)
    }
}

fn make_sealer(key: &medvault_crypto::Secret32, danger_unsealed: bool) -> Sealer {
    #[cfg(feature = "danger-benchmark-unsealed")]
    if danger_unsealed {
        return Sealer::danger_unsealed_for_benchmark(key);
    }
    // Without the benchmark feature the flag can only be false.
    assert!(!danger_unsealed, "unsealed storage needs the danger-benchmark-unsealed feature");
    Sealer::new(key)
}

fn single_key(engine: &dyn Engine, purpose: KeyPurpose) -> Result<KeyRow, StoreError> {
    let mut rows = engine.keys_by_purpose(purpose as u8)?;
    if rows.len() != 1 {
        return Err(StoreError::Corrupt(format!(
            "expected one key of purpose {}, found {}",
            purpose as u8,
            rows.len()
        )));
    }
    rows.pop().ok_or(StoreError::Corrupt("missing store key".into()))
}
