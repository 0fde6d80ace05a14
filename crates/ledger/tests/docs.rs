//! Keeps the examples in `docs/format/ledger.md` and `docs/format/checkpoint.md` true:
//! each is read from the page and recomputed with the code.

mod common;

use common::hex;
use medvault_ledger::{
    cosign, leaf_hash, open_checkpoint, root, sign_note, Checkpoint, LeafData, MemoryNodeStore, ResourceVersionFields,
    SigningKey, Verifier,
};
use sha2::Digest;

fn page(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/format").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The contents of the first fenced block that starts with `first_line`.
fn fenced_block(page: &str, first_line: &str) -> String {
    let start = page.find(&format!("```\n{first_line}")).expect("block") + 4;
    let length = page[start..].find("```").expect("end of block");
    page[start..start + length].to_owned()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn the_leaf_example_is_true() {
    let page = page("ledger.md");
    let encoded = page.split("As one hex string (75 bytes):\n`").nth(1).and_then(|rest| rest.split('`').next());
    let bytes = hex(encoded.expect("the example hex string"));
    let leaf = LeafData::decode(&bytes).expect("the example decodes");
    let sealed: [u8; 32] = sha2::Sha256::digest(b"sealed bytes").into();
    let expected = LeafData::resource_version(ResourceVersionFields {
        resource_type: "Patient",
        resource_id: "pat-1",
        version: 2,
        sealed_sha256: sealed,
        deleted: false,
        recorded_ms: 1_767_225_600_000,
        author: "ward-7",
    })
    .expect("leaf");
    assert_eq!(leaf, expected);
    assert_eq!(expected.encode(), bytes);
    assert!(page.contains(&format!("Leaf hash: `{}`", to_hex(&expected.leaf_hash()))));
    assert!(page.contains(&format!("(SHA-256 `{}`)", to_hex(&sealed))));
    // The byte-by-byte table lists the same bytes.
    let table = fenced_block(&page, "01 01");
    let table_hex: String =
        table.lines().flat_map(|line| line.split("   ").next()).collect::<String>().replace(' ', "");
    assert_eq!(table_hex, to_hex(&bytes));
}

#[test]
fn the_checkpoint_example_is_true() {
    let page = page("checkpoint.md");
    let note = fenced_block(&page, "medvault.example/ledger\n3\n");
    let keys = fenced_block(&page, "medvault.example/ledger+");
    let mut keys = keys.lines();
    let log = Verifier::parse(keys.next().expect("log key")).expect("log key");
    let witness = Verifier::parse(keys.next().expect("witness key")).expect("witness key");

    let opened = open_checkpoint(note.as_bytes(), &log, std::slice::from_ref(&witness)).expect("the example opens");
    assert_eq!(opened.cosignatures.len(), 1);
    assert_eq!(opened.cosignatures[0].time_s, 1_767_225_600);

    // Recomputed from the documented seeds and leaves, byte for byte.
    let mut store = MemoryNodeStore::new();
    for byte in 0..3u8 {
        store.append(leaf_hash(&[byte])).expect("append");
    }
    let log_key = SigningKey::from_seed(&std::array::from_fn(|i| i as u8)).expect("key");
    let witness_key = SigningKey::from_seed(&std::array::from_fn(|i| 0x80 + i as u8)).expect("key");
    assert_eq!(log_key.verifier("medvault.example/ledger").expect("v"), log);
    assert_eq!(witness_key.cosignature_verifier("witness.example/w1").expect("v"), witness);
    let checkpoint = Checkpoint::new("medvault.example/ledger", 3, root(3, &store).expect("root")).expect("checkpoint");
    assert_eq!(opened.checkpoint, checkpoint);
    let signed = sign_note(&checkpoint.to_body(), "medvault.example/ledger", &log_key).expect("sign");
    let cosigned = cosign(&signed, "witness.example/w1", &witness_key, 1_767_225_600).expect("cosign");
    assert_eq!(cosigned, note);
}
