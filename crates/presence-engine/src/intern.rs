//! Interning of IDs to dense `u32` indices, so that presence, membership and fan-out work on
//! flat arrays instead of maps of strings.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

/// A dense index for an interned user (local or remote). Indices are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserIdx(pub(crate) u32);

impl UserIdx {
    /// The index as a `usize`, for callers keeping their own per-user arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Values interned to `u32`, looked up by their string form.
pub(crate) struct Interner<T> {
    items: Vec<T>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl<T: AsRef<str> + Clone> Interner<T> {
    pub(crate) fn new() -> Self {
        Self {
            items: Vec::new(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn get(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&i| self.items[i as usize].as_ref() == key)
            .copied()
    }

    /// Returns the index of `item`, inserting it if new; the bool says whether it was new.
    pub(crate) fn intern(&mut self, item: &T) -> (u32, bool) {
        if let Some(i) = self.get(item.as_ref()) {
            return (i, false);
        }
        let idx = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
        let hash = self.hasher.hash_one(item.as_ref());
        let (items, hasher) = (&self.items, &self.hasher);
        self.table
            .insert_unique(hash, idx, |&i| hasher.hash_one(items[i as usize].as_ref()));
        self.items.push(item.clone());
        (idx, true)
    }

    pub(crate) fn resolve(&self, idx: u32) -> &T {
        &self.items[idx as usize]
    }

    /// The item at a `usize` position (as from enumerating a parallel column).
    pub(crate) fn resolve_index(&self, i: usize) -> &T {
        &self.items[i]
    }
}
