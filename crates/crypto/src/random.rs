//! The operating system's random generator, the only source of keys, nonces and tokens.

use crate::CryptoError;

pub fn fill(buffer: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buffer).map_err(|_| CryptoError::Random)
}

pub fn array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    fill(&mut bytes)?;
    Ok(bytes)
}

/// A random version-4 UUID in its canonical text form, for server-assigned resource ids.
pub fn uuid_v4() -> Result<String, CryptoError> {
    let mut bytes = array::<16>()?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = medvault_hex(&bytes);
    Ok(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

fn medvault_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = super::uuid_v4().expect("random");
        let b = super::uuid_v4().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
