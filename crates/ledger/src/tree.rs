//! The Merkle tree over a store of complete subtrees: appends, roots and RFC 9162 proofs.
//!
//! The store holds the hash of every *complete* (perfect) subtree: level 0 index i is the
//! hash of leaf i; level k index i is the root of leaves `[i·2^k, (i+1)·2^k)`. A tree of
//! any size is the sequence of complete subtrees given by the binary digits of its size,
//! largest first, so every root and proof needs O(log n) lookups and no recomputation.

use crate::hash::{node_hash, Hash, EMPTY_ROOT};
use crate::LedgerError;

/// Where the complete subtrees live; the store implements it with its `ledger` table.
pub trait NodeStore {
    /// The hash of the complete subtree at `level` and `index`, if the store has it.
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LedgerError>;
}

impl<T: NodeStore + ?Sized> NodeStore for &T {
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LedgerError> {
        (**self).node(level, index)
    }
}

/// The complete-subtree nodes that appending leaf `leaf_index` creates, the leaf itself
/// first: `(level, index, hash)`. The caller persists all of them in the transaction that
/// commits the leaf. The store must hold exactly `leaf_index` leaves.
pub fn append_nodes(
    leaf_index: u64,
    leaf_hash: Hash,
    store: &(impl NodeStore + ?Sized),
) -> Result<Vec<(u8, u64, Hash)>, LedgerError> {
    if leaf_index == u64::MAX {
        return Err(LedgerError::TreeFull);
    }
    if store.node(0, leaf_index)?.is_some() {
        return Err(LedgerError::LeafExists { index: leaf_index });
    }
    // An odd index checks its left sibling below; an even one would silently leave a gap.
    if leaf_index > 0 && leaf_index & 1 == 0 {
        required(store, 0, leaf_index - 1)?;
    }
    let mut nodes = vec![(0, leaf_index, leaf_hash)];
    let (mut level, mut index, mut hash) = (0u8, leaf_index, leaf_hash);
    while index & 1 == 1 {
        let left = required(store, level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index /= 2;
        nodes.push((level, index, hash));
    }
    Ok(nodes)
}

/// The root of the tree made of the first `size` leaves (RFC 9162 MTH), from at most 64
/// complete subtrees.
pub fn root(size: u64, store: &(impl NodeStore + ?Sized)) -> Result<Hash, LedgerError> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    range_root(store, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1
/// PATH), bottom to top.
pub fn inclusion_proof(index: u64, size: u64, store: &(impl NodeStore + ?Sized)) -> Result<Vec<Hash>, LedgerError> {
    if index >= size {
        return Err(LedgerError::IndexOutOfRange { index, size });
    }
    // PATH(m, D[lo:hi]) walked from the top: at each split the sibling range joins the
    // proof. Left siblings are complete subtrees; at most one right sibling is not.
    let (mut lo, mut hi) = (0, size);
    let mut top_down = Vec::with_capacity(64);
    while hi - lo > 1 {
        let middle = lo + split(hi - lo);
        if index < middle {
            top_down.push(range_root(store, middle, hi)?);
            hi = middle;
        } else {
            top_down.push(range_root(store, lo, middle)?);
            lo = middle;
        }
    }
    top_down.reverse();
    Ok(top_down)
}

/// The consistency proof from the tree of `old_size` leaves to the tree of `new_size`
/// leaves (RFC 9162 §2.1.4.1 PROOF). Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    store: &(impl NodeStore + ?Sized),
) -> Result<Vec<Hash>, LedgerError> {
    if old_size > new_size {
        return Err(LedgerError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b) walked from the top; only the first right sibling taken
    // can be incomplete, every range recursed into after it is a complete subtree.
    let (mut lo, mut hi, mut old_is_whole_tree) = (0, new_size, true);
    let mut top_down = Vec::with_capacity(64);
    while old_size != hi {
        let middle = lo + split(hi - lo);
        if old_size <= middle {
            top_down.push(range_root(store, middle, hi)?);
            hi = middle;
        } else {
            top_down.push(range_root(store, lo, middle)?);
            lo = middle;
            old_is_whole_tree = false;
        }
    }
    if !old_is_whole_tree {
        top_down.push(range_root(store, lo, hi)?);
    }
    top_down.reverse();
    Ok(top_down)
}

/// Computes the root of leaf hashes pushed one by one, in O(log n) memory: `verify`
/// recomputes the whole tree from the stored leaves with it.
#[derive(Debug, Clone, Default)]
pub struct RootBuilder {
    /// Roots of the complete subtrees of the leaves pushed so far, largest first; their
    /// sizes are the binary digits of `size`.
    subtrees: Vec<Hash>,
    size: u64,
}

impl RootBuilder {
    pub fn new() -> Self {
        Self { subtrees: Vec::with_capacity(64), size: 0 }
    }

    /// Adds the next leaf hash.
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.subtrees.pop().expect("one subtree per set bit of the size");
            hash = node_hash(&left, &hash);
            size /= 2;
        }
        self.subtrees.push(hash);
        self.size += 1;
    }

    /// The number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the leaves pushed so far (the empty root when there are none).
    pub fn root(&self) -> Hash {
        let mut subtrees = self.subtrees.iter().rev();
        let Some(smallest) = subtrees.next() else {
            return EMPTY_ROOT;
        };
        subtrees.fold(*smallest, |right, left| node_hash(left, &right))
    }
}

/// A node store in memory: for tests, and for tools that rebuild a tree from leaves.
#[derive(Debug, Clone, Default)]
pub struct MemoryNodeStore {
    /// `levels[k][i]` is the node at level k, index i; each level only grows.
    levels: Vec<Vec<Hash>>,
}

impl MemoryNodeStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends a leaf hash and returns its index.
    pub fn append(&mut self, leaf_hash: Hash) -> Result<u64, LedgerError> {
        let leaf_index = self.size();
        for (level, index, hash) in append_nodes(leaf_index, leaf_hash, self)? {
            self.insert(level, index, hash)?;
        }
        Ok(leaf_index)
    }

    /// Stores one node; nodes of a level must arrive in index order, as appends make them.
    pub fn insert(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), LedgerError> {
        let level_index = usize::from(level);
        if self.levels.len() <= level_index {
            self.levels.resize_with(level_index + 1, Vec::new);
        }
        let nodes = &mut self.levels[level_index];
        if index != nodes.len() as u64 {
            return Err(LedgerError::Store(
                format!("node (level {level}, index {index}) out of order: the level holds {}", nodes.len()).into(),
            ));
        }
        nodes.push(hash);
        Ok(())
    }
}

impl NodeStore for MemoryNodeStore {
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LedgerError> {
        let Ok(index) = usize::try_from(index) else {
            return Ok(None);
        };
        Ok(self.levels.get(usize::from(level)).and_then(|nodes| nodes.get(index)).copied())
    }
}

fn required(store: &(impl NodeStore + ?Sized), level: u8, index: u64) -> Result<Hash, LedgerError> {
    store.node(level, index)?.ok_or(LedgerError::MissingNode { level, index })
}

/// The largest power of two strictly below `width` (RFC 9162's k), for `width >= 2`.
fn split(width: u64) -> u64 {
    debug_assert!(width >= 2);
    1 << (63 - (width - 1).leading_zeros())
}

/// MTH of leaves `[start, end)`, where `start` is a multiple of a power of two at least
/// `end - start` (true of every range the RFC recursion visits). The range is the
/// complete subtrees given by the binary digits of its width, largest first; they are
/// folded from the right, as MTH splits off the largest power of two on the left.
fn range_root(store: &(impl NodeStore + ?Sized), start: u64, end: u64) -> Result<Hash, LedgerError> {
    debug_assert!(start < end);
    let width = end - start;
    let mut root: Option<Hash> = None;
    for level in 0..64u8 {
        if width & (1 << level) == 0 {
            continue;
        }
        // Leaves before this subtree: the higher binary digits of the width.
        let higher = width & !((2u64 << level).wrapping_sub(1));
        let subtree_start = start + higher;
        debug_assert_eq!(subtree_start % (1 << level), 0, "range [{start}, {end}) is not aligned");
        let subtree = required(store, level, subtree_start >> level)?;
        root = Some(match root {
            None => subtree,
            Some(right) => node_hash(&subtree, &right),
        });
    }
    Ok(root.unwrap_or(EMPTY_ROOT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    fn store_of(size: u64) -> (MemoryNodeStore, Vec<Hash>) {
        let mut store = MemoryNodeStore::new();
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for leaf in &leaves {
            store.append(*leaf).expect("append");
        }
        (store, leaves)
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (width, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (u64::MAX, 1 << 63)] {
            assert_eq!(split(width), k, "width {width}");
        }
    }

    #[test]
    fn append_refuses_replays_and_gaps() {
        let (store, leaves) = store_of(5);
        assert!(matches!(append_nodes(4, leaves[0], &store), Err(LedgerError::LeafExists { index: 4 })));
        assert!(matches!(append_nodes(6, leaves[0], &store), Err(LedgerError::MissingNode { level: 0, index: 5 })));
        assert!(matches!(append_nodes(7, leaves[0], &store), Err(LedgerError::MissingNode { level: 0, index: 6 })));
        assert!(matches!(append_nodes(u64::MAX, leaves[0], &store), Err(LedgerError::TreeFull)));
        let nodes = append_nodes(5, leaves[0], &store).expect("next leaf");
        assert_eq!(nodes.iter().map(|(level, index, _)| (*level, *index)).collect::<Vec<_>>(), [(0, 5), (1, 2)]);
    }

    #[test]
    fn a_size_beyond_the_store_is_a_missing_node() {
        let (store, _) = store_of(6);
        assert!(matches!(root(7, &store), Err(LedgerError::MissingNode { .. })));
        assert!(matches!(inclusion_proof(0, 9, &store), Err(LedgerError::MissingNode { .. })));
        assert!(matches!(consistency_proof(3, 12, &store), Err(LedgerError::MissingNode { .. })));
        assert!(matches!(inclusion_proof(6, 6, &store), Err(LedgerError::IndexOutOfRange { index: 6, size: 6 })));
        assert!(matches!(consistency_proof(5, 4, &store), Err(LedgerError::SizesOutOfOrder { .. })));
    }

    #[test]
    fn memory_store_keeps_levels_in_order() {
        let mut store = MemoryNodeStore::new();
        assert!(store.insert(0, 1, EMPTY_ROOT).is_err());
        assert_eq!(store.node(3, u64::MAX).expect("lookup"), None);
    }

    #[test]
    fn root_builder_matches_the_store() {
        let (store, leaves) = store_of(300);
        let mut builder = RootBuilder::new();
        assert_eq!(builder.root(), EMPTY_ROOT);
        for (size, leaf) in leaves.iter().enumerate() {
            builder.push(*leaf);
            assert_eq!(builder.size(), size as u64 + 1);
            assert_eq!(builder.root(), root(size as u64 + 1, &store).expect("root"), "size {}", size + 1);
        }
    }
}
