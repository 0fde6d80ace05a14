//! Proof verification, step by step as RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
//! (consistency) write it, with each failure named.

use crate::hash::{node_hash, Hash, EMPTY_ROOT};
use crate::ProofError;

/// Checks that `leaf_hash` is leaf `index` of the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    // 1. leaf_index >= tree_size fails.
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // 2. fn = leaf_index, sn = tree_size - 1. 3. r = hash.
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    // 4. For each p in inclusion_path:
    for p in proof {
        // a. sn == 0 with hashes left fails.
        if sn == 0 {
            return Err(ProofError::ProofTooLong { len: proof.len() });
        }
        // b. If LSB(fn) is set, or fn == sn: r = HASH(0x01 || p || r), then, if LSB(fn)
        //    is not set, shift until LSB(fn) is set or fn is 0. Otherwise r = HASH(0x01 || r || p).
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        // c. Shift once.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. sn must be 0 and r the root.
    if sn != 0 {
        return Err(ProofError::ProofTooShort { len: proof.len() });
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root`.
///
/// RFC 9162 defines the algorithm for `0 < old_size < new_size`. For the other cases,
/// as the RFC's PROOF yields an empty proof for them: equal sizes need an empty proof and
/// equal roots; old size 0 needs an empty proof and the empty-tree root as old root.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::ProofTooLong { len: proof.len() });
        }
        if old_size == 0 && *old_root != EMPTY_ROOT {
            return Err(ProofError::OldRootMismatch);
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::NewRootMismatch);
        }
        return Ok(());
    }
    // 1. An empty consistency_path fails.
    let Some((first_of_proof, rest_of_proof)) = proof.split_first() else {
        return Err(ProofError::EmptyProof);
    };
    // 2. If first is an exact power of 2, first_hash is prepended to the path.
    let (seed, path) = if old_size.is_power_of_two() { (old_root, proof) } else { (first_of_proof, rest_of_proof) };
    // 3. fn = first - 1, sn = second - 1. 4. Shift both while LSB(fn) is set.
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. fr = sr = the first value of the path.
    let (mut fr, mut sr) = (*seed, *seed);
    // 6. For each subsequent value c:
    for c in path {
        // a. sn == 0 with hashes left fails.
        if sn == 0 {
            return Err(ProofError::ProofTooLong { len: proof.len() });
        }
        // b. If LSB(fn) is set or fn == sn: fr = HASH(0x01 || c || fr), sr = HASH(0x01 || c || sr),
        //    then, if LSB(fn) is not set, shift until LSB(fn) is set or fn is 0.
        //    Otherwise sr = HASH(0x01 || sr || c).
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        // c. Shift once.
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7. sn must be 0, fr the old root and sr the new root.
    if sn != 0 {
        return Err(ProofError::ProofTooShort { len: proof.len() });
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    #[test]
    fn trivial_cases() {
        let root_a = leaf_hash(b"a");
        let root_b = leaf_hash(b"b");
        assert_eq!(verify_inclusion(&root_a, 0, 1, &[], &root_a), Ok(()));
        assert_eq!(verify_inclusion(&root_a, 0, 1, &[], &root_b), Err(ProofError::RootMismatch));
        assert_eq!(
            verify_inclusion(&root_a, 0, 0, &[], &EMPTY_ROOT),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            verify_inclusion(&root_a, 1, 1, &[], &root_a),
            Err(ProofError::IndexOutOfRange { index: 1, size: 1 })
        );
        assert_eq!(verify_inclusion(&root_a, 0, 1, &[root_b], &root_a), Err(ProofError::ProofTooLong { len: 1 }));

        assert_eq!(verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 5, &EMPTY_ROOT, &root_b, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 5, &root_a, &root_b, &[]), Err(ProofError::OldRootMismatch));
        assert_eq!(verify_consistency(0, 5, &EMPTY_ROOT, &root_b, &[root_a]), Err(ProofError::ProofTooLong { len: 1 }));
        assert_eq!(verify_consistency(3, 3, &root_a, &root_a, &[]), Ok(()));
        assert_eq!(verify_consistency(3, 3, &root_a, &root_b, &[]), Err(ProofError::NewRootMismatch));
        assert_eq!(verify_consistency(3, 3, &root_a, &root_a, &[root_a]), Err(ProofError::ProofTooLong { len: 1 }));
        assert_eq!(
            verify_consistency(4, 3, &root_a, &root_b, &[]),
            Err(ProofError::SizesOutOfOrder { old_size: 4, new_size: 3 })
        );
        assert_eq!(verify_consistency(1, 2, &root_a, &root_b, &[]), Err(ProofError::EmptyProof));
    }
}
