//! A 32-byte secret that zeroizes on drop, never prints, and is read through a greppable call.

use zeroize::Zeroizing;

#[derive(Clone)]
pub struct Secret32(Zeroizing<[u8; 32]>);

impl Secret32 {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Takes the secret out of a buffer and wipes the buffer.
    pub fn from_slice_zeroizing(bytes: &mut [u8]) -> Option<Self> {
        use zeroize::Zeroize;
        let array: [u8; 32] = bytes.try_into().ok()?;
        bytes.zeroize();
        Some(Self::from_bytes(array))
    }

    pub fn random() -> Result<Self, crate::CryptoError> {
        let mut secret = Self::from_bytes([0; 32]);
        getrandom::getrandom(secret.0.as_mut_slice()).map_err(|_| crate::CryptoError::Random)?;
        Ok(secret)
    }

    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32([redacted])")
    }
}
