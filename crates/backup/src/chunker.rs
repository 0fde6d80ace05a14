//! Content-defined chunking (`backup-repository.md`, "Chunking and blob ids"): a
//! FastCDC-style gear hash with normalized chunking and a keyed gear table. Streaming: bytes
//! go in as they are dumped; chunks come out as soon as their cut point is known.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// No cut before this many bytes.
pub const CHUNK_MIN_BYTES: usize = 2 * 1024;
/// The size normalized chunking aims at.
pub const CHUNK_AVG_BYTES: usize = 8 * 1024;
/// A cut is forced here.
pub const CHUNK_MAX_BYTES: usize = medvault_base::limits::BACKUP_CHUNK_BYTES_MAX;

/// 15 one-bits below the average size (harder to cut), 11 above it (easier): FastCDC's
/// normalization level 2 around 2^13, with the FastCDC paper's padded masks (bits spread
/// over positions 16..50, so each decision depends on the last 32+ bytes).
const MASK_HARD: u64 = 0x0003_5907_0353_0000;
const MASK_EASY: u64 = 0x0000_d900_0353_0000;

/// Cuts a byte stream into chunks.
pub struct Chunker {
    gear: [u64; 256],
    buffer: Vec<u8>,
    /// Bytes of `buffer` already scanned without finding a cut, and the hash at that point.
    scanned: usize,
    hash: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker").field("buffered", &self.buffer.len()).finish_non_exhaustive()
    }
}

impl Chunker {
    /// A chunker whose gear table is keyed by `id_key`, so cut points reveal nothing to
    /// someone without it.
    pub fn new(id_key: &[u8; 32]) -> Self {
        let mut gear = [0u64; 256];
        for (index, entry) in gear.iter_mut().enumerate() {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(id_key).expect("HMAC takes any key length");
            mac.update(b"gear\0");
            mac.update(&[index as u8]);
            let bytes = mac.finalize().into_bytes();
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[..8]);
            *entry = u64::from_be_bytes(word);
        }
        Self { gear, buffer: Vec::with_capacity(4 * CHUNK_MAX_BYTES), scanned: 0, hash: 0 }
    }

    /// Adds bytes; calls `emit` for every chunk completed.
    pub fn push<E>(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.buffer.extend_from_slice(data);
        let mut start = 0;
        loop {
            let (cut, scanned, hash) = find_cut(&self.gear, &self.buffer[start..], self.scanned, self.hash);
            self.scanned = scanned;
            self.hash = hash;
            match cut {
                Some(cut) => {
                    emit(&self.buffer[start..start + cut])?;
                    start += cut;
                }
                None => break,
            }
        }
        if start > 0 {
            self.buffer.drain(..start);
        }
        Ok(())
    }

    /// Emits what is left as the last chunk.
    pub fn finish<E>(&mut self, emit: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.buffer.is_empty() {
            emit(&self.buffer)?;
        }
        self.buffer.clear();
        self.scanned = 0;
        self.hash = 0;
        Ok(())
    }
}

/// The length of the next chunk of `data`, if its cut point is already known; else how far
/// it scanned and the hash there, to resume when more bytes arrive.
fn find_cut(gear: &[u64; 256], data: &[u8], scanned: usize, hash: u64) -> (Option<usize>, usize, u64) {
    if data.len() < CHUNK_MIN_BYTES {
        return (None, scanned, hash);
    }
    let mut hash = hash;
    let mut index = scanned.max(CHUNK_MIN_BYTES);
    let normal_end = CHUNK_AVG_BYTES.min(data.len());
    while index < normal_end {
        hash = (hash << 1).wrapping_add(gear[usize::from(data[index])]);
        index += 1;
        if hash & MASK_HARD == 0 {
            return (Some(index), 0, 0);
        }
    }
    let end = CHUNK_MAX_BYTES.min(data.len());
    while index < end {
        hash = (hash << 1).wrapping_add(gear[usize::from(data[index])]);
        index += 1;
        if hash & MASK_EASY == 0 {
            return (Some(index), 0, 0);
        }
    }
    if index >= CHUNK_MAX_BYTES {
        return (Some(CHUNK_MAX_BYTES), 0, 0);
    }
    (None, index, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(chunker: &mut Chunker, data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for part in data.chunks(piece) {
            chunker
                .push::<()>(part, &mut |c| {
                    out.push(c.to_vec());
                    Ok(())
                })
                .expect("push");
        }
        chunker
            .finish::<()>(&mut |c| {
                out.push(c.to_vec());
                Ok(())
            })
            .expect("finish");
        out
    }

    fn pseudo_random(length: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn masks_have_the_documented_bit_counts() {
        assert_eq!(MASK_HARD.count_ones(), 15);
        assert_eq!(MASK_EASY.count_ones(), 11);
    }

    #[test]
    fn cuts_do_not_depend_on_how_bytes_arrive_and_respect_the_bounds() {
        let data = pseudo_random(2_000_000, 7);
        let a = chunks(&mut Chunker::new(&[1; 32]), &data, 1 << 20);
        let b = chunks(&mut Chunker::new(&[1; 32]), &data, 977);
        assert_eq!(a, b);
        assert_eq!(a.concat(), data);
        assert!(a[..a.len() - 1].iter().all(|c| c.len() >= CHUNK_MIN_BYTES && c.len() <= CHUNK_MAX_BYTES));
        let average = data.len() / a.len();
        assert!((6 * 1024..=14 * 1024).contains(&average), "average chunk {average}");
    }

    #[test]
    fn an_append_keeps_every_earlier_chunk_and_the_key_moves_cuts() {
        let data = pseudo_random(1_000_000, 9);
        let before = chunks(&mut Chunker::new(&[1; 32]), &data, 4096);
        let mut grown = data.clone();
        grown.extend_from_slice(&pseudo_random(50_000, 10));
        let after = chunks(&mut Chunker::new(&[1; 32]), &grown, 4096);
        // Every chunk but the old last one (cut by the end of the stream) comes back.
        assert_eq!(before[..before.len() - 1], after[..before.len() - 1]);
        let other_key = chunks(&mut Chunker::new(&[2; 32]), &data, 4096);
        assert_ne!(before[0].len(), other_key[0].len());
    }

    #[test]
    fn an_edit_in_the_middle_resynchronizes() {
        let data = pseudo_random(1_000_000, 11);
        let before = chunks(&mut Chunker::new(&[3; 32]), &data, 4096);
        let mut edited = data.clone();
        edited[500_000] ^= 0xff;
        let after = chunks(&mut Chunker::new(&[3; 32]), &edited, 4096);
        let common = after.iter().filter(|c| before.contains(c)).count();
        assert!(common + 3 >= before.len(), "{common} of {} chunks survive one edit", before.len());
    }
}
