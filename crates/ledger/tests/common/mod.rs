//! Helpers shared by the integration tests: hex, a seeded generator, and a reference
//! Merkle tree written straight from the recursive definitions of RFC 9162 §2.1.

#![allow(dead_code)]

use medvault_ledger::{node_hash, Hash, EMPTY_ROOT};

pub fn hex(text: &str) -> Vec<u8> {
    assert!(text.len() & 1 == 0, "odd hex {text}");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}

pub fn hash(text: &str) -> Hash {
    hex(text).try_into().expect("32 bytes")
}

/// xorshift64*: deterministic, so every failure replays from its seed.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    pub fn hash(&mut self) -> Hash {
        let mut hash = [0u8; 32];
        for chunk in hash.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_be_bytes());
        }
        hash
    }
}

/// The side of the path a proof hash sits on, seen from the leaf or the old tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]).
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]) with the side of each hash, bottom to top.
pub fn path(m: usize, leaves: &[Hash]) -> Vec<(Hash, Side)> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut proof = path(m, &leaves[..k]);
        proof.push((mth(&leaves[k..]), Side::Right));
        proof
    } else {
        let mut proof = path(m - k, &leaves[k..]);
        proof.push((mth(&leaves[..k]), Side::Left));
        proof
    }
}

/// PROOF(m, D[n]) = SUBPROOF(m, D[n], true), with the side of each hash relative to the
/// old tree's right edge. The first hash of a proof whose old tree is not a complete
/// subtree is the seed and is marked `Left`.
pub fn consistency(m: usize, leaves: &[Hash]) -> Vec<(Hash, Side)> {
    if m == 0 || m == leaves.len() {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<(Hash, Side)> {
    let n = leaves.len();
    if m == n {
        return if whole { Vec::new() } else { vec![(mth(leaves), Side::Left)] };
    }
    let k = split(n);
    if m <= k {
        let mut proof = subproof(m, &leaves[..k], whole);
        proof.push((mth(&leaves[k..]), Side::Right));
        proof
    } else {
        let mut proof = subproof(m - k, &leaves[k..], false);
        proof.push((mth(&leaves[..k]), Side::Left));
        proof
    }
}

pub fn hashes(proof: &[(Hash, Side)]) -> Vec<Hash> {
    proof.iter().map(|(hash, _)| *hash).collect()
}

pub fn sides(proof: &[(Hash, Side)]) -> Vec<Side> {
    proof.iter().map(|(_, side)| *side).collect()
}

fn split_u64(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The sides of PATH(m, D[n]) without the hashes: the shape of an inclusion proof.
pub fn path_sides(m: u64, n: u64) -> Vec<Side> {
    if n <= 1 {
        return Vec::new();
    }
    let k = split_u64(n);
    let (mut sides, side) =
        if m < k { (path_sides(m, k), Side::Right) } else { (path_sides(m - k, n - k), Side::Left) };
    sides.push(side);
    sides
}

/// The sides of PROOF(m, D[n]) without the hashes: the shape of a consistency proof.
pub fn consistency_sides(m: u64, n: u64) -> Vec<Side> {
    if m == 0 || m == n {
        return Vec::new();
    }
    subproof_sides(m, n, true)
}

fn subproof_sides(m: u64, n: u64, whole: bool) -> Vec<Side> {
    if m == n {
        return if whole { Vec::new() } else { vec![Side::Left] };
    }
    let k = split_u64(n);
    let (mut sides, side) = if m <= k {
        (subproof_sides(m, k, whole), Side::Right)
    } else {
        (subproof_sides(m - k, n - k, false), Side::Left)
    };
    sides.push(side);
    sides
}
