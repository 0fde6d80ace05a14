//! Seeded property tests: for random trees, every proof equals the RFC 9162 recursive
//! definition, verifies, and every mutation of it is refused unless the mutated claim
//! really has the same proof. Each failure names its seed and replays from it.
//!
//! On sizes: a root does not commit to its tree size, so a proof can verify under another
//! size exactly when that size gives the proof the same shape (the same hash on the same
//! side at every step). The signed checkpoint is what binds a root to its size. The
//! oracle here predicts acceptance from the RFC's recursive definition, independently of
//! the verifier's bit arithmetic.

mod common;

use common::{consistency, consistency_sides, hashes, mth, path, path_sides, sides, Side, XorShift};
use medvault_ledger::{
    consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion, Hash, MemoryNodeStore, ProofError,
    RootBuilder,
};

struct Tree {
    store: MemoryNodeStore,
    leaves: Vec<Hash>,
    /// `roots[s]` is MTH of the first s leaves.
    roots: Vec<Hash>,
}

fn random_tree(random: &mut XorShift, size: usize) -> Tree {
    let mut store = MemoryNodeStore::new();
    let mut builder = RootBuilder::new();
    let mut leaves = Vec::with_capacity(size);
    let mut roots = vec![builder.root()];
    for _ in 0..size {
        let leaf = random.hash();
        store.append(leaf).expect("append");
        builder.push(leaf);
        leaves.push(leaf);
        roots.push(builder.root());
    }
    Tree { store, leaves, roots }
}

/// The side pattern a claim (index, size) gives its proof, or None when no proof exists.
fn inclusion_shape(index: u64, size: u64) -> Option<Vec<Side>> {
    (index < size).then(|| path_sides(index, size))
}

/// Whether a seed is implied (old tree is a complete subtree) and the side pattern, for
/// the sizes whose proofs the RFC algorithm checks (0 < old < new).
fn consistency_shape(old_size: u64, new_size: u64) -> Option<(bool, Vec<Side>)> {
    (0 < old_size && old_size < new_size).then(|| (old_size.is_power_of_two(), consistency_sides(old_size, new_size)))
}

/// How thoroughly to check one proof: the reference comparison costs O(n) hashes and the
/// mutations a few dozen verifications, so large trees sample them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    VerifyOnly,
    Mutations,
    MutationsAndReference,
}

fn depth_for(position: u64) -> Depth {
    match position % 97 {
        0 => Depth::MutationsAndReference,
        n if n % 8 == 0 => Depth::Mutations,
        _ => Depth::VerifyOnly,
    }
}

fn check_inclusion(tree: &Tree, random: &mut XorShift, index: u64, size: u64, depth: Depth, seed: u64) {
    let context = format!("seed {seed}, inclusion of {index} in {size}");
    let proof = inclusion_proof(index, size, &tree.store).expect("proof");
    if depth == Depth::MutationsAndReference {
        let reference = path(index as usize, &tree.leaves[..size as usize]);
        assert_eq!(proof, hashes(&reference), "{context}");
        assert_eq!(path_sides(index, size), sides(&reference), "{context}");
    }
    let leaf = tree.leaves[index as usize];
    let root = tree.roots[size as usize];
    assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()), "{context}");
    if depth == Depth::VerifyOnly {
        return;
    }

    for position in 0..proof.len() {
        let mut flipped = proof.clone();
        let bit = random.between(0, 255) as usize;
        flipped[position][bit / 8] ^= 1 << (bit % 8);
        assert!(verify_inclusion(&leaf, index, size, &flipped, &root).is_err(), "{context}: bit {bit} of {position}");
    }
    let mut longer = proof.clone();
    longer.push(random.hash());
    assert!(matches!(verify_inclusion(&leaf, index, size, &longer, &root), Err(ProofError::ProofTooLong { .. })));
    let mut prefixed = vec![random.hash()];
    prefixed.extend_from_slice(&proof);
    assert!(verify_inclusion(&leaf, index, size, &prefixed, &root).is_err(), "{context}: extra first hash");
    if !proof.is_empty() {
        let dropped_last = &proof[..proof.len() - 1];
        assert!(matches!(
            verify_inclusion(&leaf, index, size, dropped_last, &root),
            Err(ProofError::ProofTooShort { .. })
        ));
        assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err(), "{context}: dropped first");
    }
    assert!(verify_inclusion(&random.hash(), index, size, &proof, &root).is_err(), "{context}: other leaf");
    assert!(verify_inclusion(&leaf, index, size, &proof, &random.hash()).is_err(), "{context}: other root");

    let shape = inclusion_shape(index, size);
    let other_claims = [
        (index.wrapping_sub(1), size),
        (index + 1, size),
        (index ^ 2, size),
        (index, size - 1),
        (index, size + 1),
        (index, size * 2),
        (index, size / 2),
        (index, random.between(1, tree.leaves.len() as u64)),
    ];
    for (other_index, other_size) in other_claims {
        if (other_index, other_size) == (index, size) {
            continue;
        }
        let accepted = verify_inclusion(&leaf, other_index, other_size, &proof, &root).is_ok();
        let same_shape = inclusion_shape(other_index, other_size) == shape;
        assert_eq!(accepted, same_shape, "{context}: claimed as {other_index} in {other_size}");
    }
}

fn check_consistency(tree: &Tree, random: &mut XorShift, old_size: u64, new_size: u64, depth: Depth, seed: u64) {
    let context = format!("seed {seed}, consistency from {old_size} to {new_size}");
    let proof = consistency_proof(old_size, new_size, &tree.store).expect("proof");
    if depth == Depth::MutationsAndReference {
        let reference = consistency(old_size as usize, &tree.leaves[..new_size as usize]);
        assert_eq!(proof, hashes(&reference), "{context}");
        assert_eq!(consistency_sides(old_size, new_size), sides(&reference), "{context}");
    }
    let old_root = tree.roots[old_size as usize];
    let new_root = tree.roots[new_size as usize];
    assert_eq!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof), Ok(()), "{context}");
    if proof.is_empty() || depth == Depth::VerifyOnly {
        return;
    }

    for position in 0..proof.len() {
        let mut flipped = proof.clone();
        let bit = random.between(0, 255) as usize;
        flipped[position][bit / 8] ^= 1 << (bit % 8);
        assert!(
            verify_consistency(old_size, new_size, &old_root, &new_root, &flipped).is_err(),
            "{context}: bit {bit} of {position}"
        );
    }
    let mut longer = proof.clone();
    longer.push(random.hash());
    assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &longer).is_err(), "{context}: extra last");
    let mut prefixed = vec![random.hash()];
    prefixed.extend_from_slice(&proof);
    assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &prefixed).is_err(), "{context}: extra first");
    let dropped_last = &proof[..proof.len() - 1];
    assert!(verify_consistency(old_size, new_size, &old_root, &new_root, dropped_last).is_err(), "{context}: dropped");
    assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof[1..]).is_err(), "{context}: dropped");
    assert!(verify_consistency(old_size, new_size, &new_root, &old_root, &proof).is_err(), "{context}: swapped roots");
    assert!(verify_consistency(old_size, new_size, &random.hash(), &new_root, &proof).is_err(), "{context}: old root");
    assert!(verify_consistency(old_size, new_size, &old_root, &random.hash(), &proof).is_err(), "{context}: new root");
    assert!(verify_consistency(new_size, old_size, &new_root, &old_root, &proof).is_err(), "{context}: reversed");

    let shape = consistency_shape(old_size, new_size);
    let other_claims = [
        (old_size - 1, new_size),
        (old_size + 1, new_size),
        (old_size ^ 2, new_size),
        (old_size, new_size - 1),
        (old_size, new_size + 1),
        (old_size, new_size * 2),
        (old_size, new_size / 2),
        (random.between(1, new_size), new_size),
        (old_size, random.between(old_size, tree.leaves.len() as u64)),
    ];
    for (other_old, other_new) in other_claims {
        if (other_old, other_new) == (old_size, new_size) {
            continue;
        }
        let accepted = verify_consistency(other_old, other_new, &old_root, &new_root, &proof).is_ok();
        let same_shape = consistency_shape(other_old, other_new) == shape;
        assert_eq!(accepted, same_shape, "{context}: claimed as {other_old} to {other_new}");
    }
}

#[test]
fn every_proof_of_a_small_tree_matches_the_definition_and_verifies() {
    let seed = 0x5eed_0001;
    let mut random = XorShift::new(seed);
    let tree = random_tree(&mut random, 70);
    for size in 1..=70u64 {
        assert_eq!(root(size, &tree.store).expect("root"), mth(&tree.leaves[..size as usize]), "size {size}");
        for index in 0..size {
            check_inclusion(&tree, &mut random, index, size, Depth::MutationsAndReference, seed);
        }
        for old_size in 0..=size {
            check_consistency(&tree, &mut random, old_size, size, Depth::MutationsAndReference, seed);
        }
    }
}

#[test]
fn random_trees_up_to_a_few_thousand_leaves() {
    for seed in 1..=8u64 {
        let mut random = XorShift::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let size = random.between(1, 4_100);
        let tree = random_tree(&mut random, size as usize);
        assert_eq!(root(size, &tree.store).expect("root"), mth(&tree.leaves), "seed {seed}");
        // Every leaf in the full tree, every old size to the full tree.
        for index in 0..size {
            check_inclusion(&tree, &mut random, index, size, depth_for(index), seed);
        }
        for old_size in 0..=size {
            check_consistency(&tree, &mut random, old_size, size, depth_for(old_size), seed);
        }
        // And random pairs of sizes in between.
        for _ in 0..200 {
            let new_size = random.between(1, size);
            let index = random.between(0, new_size - 1);
            check_inclusion(&tree, &mut random, index, new_size, Depth::Mutations, seed);
            let old_size = random.between(0, new_size);
            check_consistency(&tree, &mut random, old_size, new_size, Depth::Mutations, seed);
        }
    }
}
