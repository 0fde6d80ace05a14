//! Reference vectors from an independent RFC 6962/9162 implementation, the
//! transparency-dev Merkle library (github.com/transparency-dev/merkle):
//! `testonly/constants.go` (leaf inputs, every complete-subtree hash, roots for sizes
//! 0..=8) and `proof/verify_test.go` (inclusion and consistency proofs, and the ways it
//! corrupts them). Our proofs must equal theirs byte for byte, and our verifiers must
//! accept theirs and refuse every corruption they refuse.

mod common;

use common::{hash, hex};
use medvault_ledger::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion, Hash, MemoryNodeStore,
    NodeStore, RootBuilder, EMPTY_ROOT,
};

/// `LeafInputs()` in testonly/constants.go.
const LEAF_INPUTS: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

/// `NodeHashes()` in testonly/constants.go: `[level][index]` over the 8 leaves.
const NODE_HASHES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// `RootHashes()` in testonly/constants.go, by tree size from 0.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// `inclusionProofs` in proof/verify_test.go: (leaf index, tree size, proof). The Go table
/// counts leaves from 1; these indexes count from 0.
const INCLUSION_PROOFS: [(u64, u64, &[&str]); 5] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, &[]),
];

/// `consistencyProofs` in proof/verify_test.go: (old size, new size, proof).
const CONSISTENCY_PROOFS: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// `sha256SomeHash` in proof/verify_test.go.
const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

fn reference_store() -> MemoryNodeStore {
    let mut store = MemoryNodeStore::new();
    for input in LEAF_INPUTS {
        store.append(leaf_hash(&hex(input))).expect("append");
    }
    store
}

fn hashes(texts: &[&str]) -> Vec<Hash> {
    texts.iter().map(|text| hash(text)).collect()
}

#[test]
fn leaf_and_node_hashes_match() {
    let store = reference_store();
    for (level, nodes) in NODE_HASHES.iter().enumerate() {
        for (index, expected) in nodes.iter().enumerate() {
            let node = store.node(level as u8, index as u64).expect("lookup");
            assert_eq!(node, Some(hash(expected)), "level {level} index {index}");
        }
        let beyond = store.node(level as u8, nodes.len() as u64).expect("lookup");
        assert_eq!(beyond, None, "no node past the complete subtrees of level {level}");
    }
}

#[test]
fn roots_match_for_every_size() {
    let store = reference_store();
    let mut builder = RootBuilder::new();
    assert_eq!(EMPTY_ROOT, hash(ROOTS[0]));
    for (size, expected) in ROOTS.iter().enumerate() {
        assert_eq!(root(size as u64, &store).expect("root"), hash(expected), "size {size}");
        assert_eq!(builder.root(), hash(expected), "streamed size {size}");
        if let Some(input) = LEAF_INPUTS.get(size) {
            builder.push(leaf_hash(&hex(input)));
        }
    }
}

#[test]
fn inclusion_proofs_match_and_verify() {
    let store = reference_store();
    for (index, size, expected) in INCLUSION_PROOFS {
        let expected = hashes(expected);
        assert_eq!(inclusion_proof(index, size, &store).expect("proof"), expected, "({index}, {size})");
        let leaf = leaf_hash(&hex(LEAF_INPUTS[index as usize]));
        let root = hash(ROOTS[size as usize]);
        assert_eq!(verify_inclusion(&leaf, index, size, &expected, &root), Ok(()));
        for (description, probe) in corrupt_inclusion(index, size, &expected, &root, &leaf) {
            assert!(probe().is_err(), "({index}, {size}) accepted {description}");
        }
    }
}

#[test]
fn consistency_proofs_match_and_verify() {
    let store = reference_store();
    for (old_size, new_size, expected) in CONSISTENCY_PROOFS {
        let expected = hashes(expected);
        assert_eq!(consistency_proof(old_size, new_size, &store).expect("proof"), expected);
        let old_root = hash(ROOTS[old_size as usize]);
        let new_root = hash(ROOTS[new_size as usize]);
        assert_eq!(verify_consistency(old_size, new_size, &old_root, &new_root, &expected), Ok(()));
        if expected.is_empty() {
            continue;
        }
        for (description, probe) in corrupt_consistency(old_size, new_size, &old_root, &new_root, &expected) {
            assert!(probe().is_err(), "({old_size}, {new_size}) accepted {description}");
        }
    }
}

#[test]
fn trivial_consistency_cases_from_the_go_tests() {
    // `TestVerifyConsistency`: sizes that are always consistent, and those that are not.
    let (root1, root2) = ([1u8; 32], [2u8; 32]);
    assert!(verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).is_ok());
    assert!(verify_consistency(1, 1, &root2, &root2, &[]).is_ok());
    assert!(verify_consistency(1, 1, &root1, &root2, &[]).is_err());
    assert!(verify_consistency(1, 0, &root1, &root2, &[]).is_err());
    assert!(verify_consistency(2, 1, &root1, &root2, &[]).is_err());
    assert!(verify_consistency(1, 2, &root1, &root2, &[]).is_err());
    assert!(verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[EMPTY_ROOT]).is_err());
    assert!(verify_consistency(0, 1, &EMPTY_ROOT, &EMPTY_ROOT, &[EMPTY_ROOT]).is_err());
    assert!(verify_consistency(1, 1, &EMPTY_ROOT, &EMPTY_ROOT, &[EMPTY_ROOT]).is_err());
    // The Go library accepts any old root for size 0; an empty tree's root is defined, so
    // this verifier insists on it.
    assert!(verify_consistency(0, 1, &EMPTY_ROOT, &root2, &[]).is_ok());
    assert!(verify_consistency(0, 1, &root1, &root2, &[]).is_err());
}

type Probe<'a> = (String, Box<dyn Fn() -> Result<(), medvault_ledger::ProofError> + 'a>);

/// `corruptInclusionProof` in proof/verify_test.go. Their empty-byte "garbage" hash cannot
/// be expressed with 32-byte hashes; the zero hash stands in for it.
fn corrupt_inclusion<'a>(index: u64, size: u64, proof: &'a [Hash], root: &'a Hash, leaf: &'a Hash) -> Vec<Probe<'a>> {
    let some_hash = hash(SOME_HASH);
    let garbage = [0u8; 32];
    let with = |proof: Vec<Hash>, index: u64, size: u64, root: Hash, leaf: Hash| -> Box<dyn Fn() -> _ + 'a> {
        Box::new(move || verify_inclusion(&leaf, index, size, &proof, &root))
    };
    let mut probes: Vec<Probe<'a>> = vec![
        ("index - 1".into(), with(proof.to_vec(), index.wrapping_sub(1), size, *root, *leaf)),
        ("index + 1".into(), with(proof.to_vec(), index + 1, size, *root, *leaf)),
        ("index ^ 2".into(), with(proof.to_vec(), index ^ 2, size, *root, *leaf)),
        ("size * 2".into(), with(proof.to_vec(), index, size * 2, *root, *leaf)),
        ("size / 2".into(), with(proof.to_vec(), index, size / 2, *root, *leaf)),
        ("wrong leaf".into(), with(proof.to_vec(), index, size, *root, leaf_hash(b"WrongLeaf"))),
        ("empty root".into(), with(proof.to_vec(), index, size, EMPTY_ROOT, *leaf)),
        ("random root".into(), with(proof.to_vec(), index, size, some_hash, *leaf)),
        ("trailing garbage".into(), with([proof, &[garbage]].concat(), index, size, *root, *leaf)),
        ("trailing root".into(), with([proof, &[*root]].concat(), index, size, *root, *leaf)),
        ("preceding garbage".into(), with([&[garbage], proof].concat(), index, size, *root, *leaf)),
        ("preceding root".into(), with([&[*root], proof].concat(), index, size, *root, *leaf)),
    ];
    for position in 0..proof.len() {
        let mut modified = proof.to_vec();
        modified[position][0] ^= 8;
        probes.push((format!("modified proof[{position}] bit 3"), with(modified, index, size, *root, *leaf)));
    }
    if let Some((_, shorter)) = proof.split_last() {
        probes.push(("removed component".into(), with(shorter.to_vec(), index, size, *root, *leaf)));
    }
    if proof.len() > 1 {
        let inserted = [&[proof[0], some_hash], &proof[1..]].concat();
        probes.push(("inserted component".into(), with(inserted, index, size, *root, *leaf)));
    }
    probes
}

/// `corruptConsistencyProof` in proof/verify_test.go.
fn corrupt_consistency<'a>(
    old_size: u64,
    new_size: u64,
    old_root: &'a Hash,
    new_root: &'a Hash,
    proof: &'a [Hash],
) -> Vec<Probe<'a>> {
    let garbage = [0u8; 32];
    let wrong_root = leaf_hash(b"WrongRoot");
    let with =
        |proof: Vec<Hash>, old_size: u64, new_size: u64, old_root: Hash, new_root: Hash| -> Box<dyn Fn() -> _ + 'a> {
            Box::new(move || verify_consistency(old_size, new_size, &old_root, &new_root, &proof))
        };
    let (o, n) = (*old_root, *new_root);
    let mut probes: Vec<Probe<'a>> = vec![
        ("old size - 1".into(), with(proof.to_vec(), old_size - 1, new_size, o, n)),
        ("old size + 1".into(), with(proof.to_vec(), old_size + 1, new_size, o, n)),
        ("old size ^ 2".into(), with(proof.to_vec(), old_size ^ 2, new_size, o, n)),
        ("new size * 2".into(), with(proof.to_vec(), old_size, new_size * 2, o, n)),
        ("new size / 2".into(), with(proof.to_vec(), old_size, new_size / 2, o, n)),
        ("wrong old root".into(), with(proof.to_vec(), old_size, new_size, wrong_root, n)),
        ("wrong new root".into(), with(proof.to_vec(), old_size, new_size, o, wrong_root)),
        ("swapped roots".into(), with(proof.to_vec(), old_size, new_size, n, o)),
        ("empty proof".into(), with(Vec::new(), old_size, new_size, o, n)),
        ("trailing garbage".into(), with([proof, &[garbage]].concat(), old_size, new_size, o, n)),
        ("trailing old root".into(), with([proof, &[o]].concat(), old_size, new_size, o, n)),
        ("trailing new root".into(), with([proof, &[n]].concat(), old_size, new_size, o, n)),
        ("preceding garbage".into(), with([&[garbage], proof].concat(), old_size, new_size, o, n)),
        ("preceding old root".into(), with([&[o], proof].concat(), old_size, new_size, o, n)),
        ("preceding new root".into(), with([&[n], proof].concat(), old_size, new_size, o, n)),
        ("preceding proof[0]".into(), with([&proof[..1], proof].concat(), old_size, new_size, o, n)),
        ("truncated proof".into(), with(proof[..proof.len() - 1].to_vec(), old_size, new_size, o, n)),
    ];
    for position in 0..proof.len() {
        let mut modified = proof.to_vec();
        modified[position][0] ^= 16;
        probes.push((format!("modified proof[{position}] bit 4"), with(modified, old_size, new_size, o, n)));
    }
    probes
}
