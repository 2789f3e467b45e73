//! Batches of presence states and the sets a router selects from them.
//!
//! The reference passes an iterable of states to `get_users_for_states` and receives a dict of
//! user ID to Python set of states, building one set per recipient. Here a router receives a
//! [`StateBatch`] and answers with [`StateSet`]s: bitsets over that batch, shared by reference
//! count. Handing the same updates to a thousand recipients costs a thousand pointer copies,
//! not a million state clones, and a router cannot return a state it was never given.

use std::{collections::HashMap, fmt, ops::Deref, sync::Arc};

use crate::{UserId, UserPresenceState};

/// What a router answers to `get_users_for_states`: for each recipient (local or remote),
/// the states from the batch it should receive.
pub type UserStates = HashMap<UserId, StateSet>;

/// An immutable batch of presence states, as passed to
/// [`PresenceRouter::get_users_for_states`](crate::PresenceRouter::get_users_for_states).
#[derive(Clone)]
pub struct StateBatch(Arc<[UserPresenceState]>);

impl StateBatch {
    /// Wraps states into a batch.
    pub fn new(states: Vec<UserPresenceState>) -> Self {
        Self(states.into())
    }

    /// The states, in the order the batch was built.
    pub fn states(&self) -> &[UserPresenceState] {
        &self.0
    }

    /// A set holding every state of the batch.
    pub fn all(&self) -> StateSet {
        self.select(|_| true)
    }

    /// A set holding no state.
    pub fn none(&self) -> StateSet {
        self.select(|_| false)
    }

    /// A set holding the states for which `keep` returns true.
    pub fn select(&self, mut keep: impl FnMut(&UserPresenceState) -> bool) -> StateSet {
        let mut bits = vec![0u64; self.0.len().div_ceil(64)];
        for (i, s) in self.0.iter().enumerate() {
            if keep(s) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        StateSet {
            batch: self.clone(),
            bits: bits.into(),
        }
    }

    /// A set holding the states at the given positions; positions out of range are ignored.
    pub fn from_indices(&self, indices: impl IntoIterator<Item = usize>) -> StateSet {
        let mut bits = vec![0u64; self.0.len().div_ceil(64)];
        for i in indices {
            if i < self.0.len() {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        StateSet {
            batch: self.clone(),
            bits: bits.into(),
        }
    }

    /// Whether two handles point at the same batch.
    pub fn same_batch(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for StateBatch {
    type Target = [UserPresenceState];
    fn deref(&self) -> &[UserPresenceState] {
        &self.0
    }
}

impl fmt::Debug for StateBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// A set of states drawn from one [`StateBatch`]. Cloning is a reference-count increment.
#[derive(Clone)]
pub struct StateSet {
    batch: StateBatch,
    bits: Arc<[u64]>,
}

impl StateSet {
    /// The batch the set draws from.
    pub fn batch(&self) -> &StateBatch {
        &self.batch
    }

    /// Whether the state at `index` of the batch is in the set.
    pub fn contains_index(&self, index: usize) -> bool {
        self.bits
            .get(index / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Positions in the batch of the states in the set, ascending.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(w * 64 + bit)
            })
        })
    }

    /// The states in the set, in batch order.
    pub fn iter(&self) -> impl Iterator<Item = &UserPresenceState> + '_ {
        self.indices().map(|i| &self.batch.0[i])
    }

    /// How many states the set holds.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The union of two sets over the same batch, or `None` if they draw from different batches.
    pub fn union(&self, other: &Self) -> Option<Self> {
        if !self.batch.same_batch(&other.batch) {
            return None;
        }
        if Arc::ptr_eq(&self.bits, &other.bits) {
            return Some(self.clone());
        }
        let bits: Vec<u64> = self
            .bits
            .iter()
            .zip(other.bits.iter())
            .map(|(a, b)| a | b)
            .collect();
        Some(Self {
            batch: self.batch.clone(),
            bits: bits.into(),
        })
    }
}

impl PartialEq for StateSet {
    fn eq(&self, other: &Self) -> bool {
        self.batch.same_batch(&other.batch) && self.bits == other.bits
    }
}

impl Eq for StateSet {}

impl fmt::Debug for StateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|s| s.user_id.as_str()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> StateBatch {
        StateBatch::new(
            (0..n)
                .map(|i| UserPresenceState::offline(UserId::parse(&format!("@u{i}:hs")).unwrap()))
                .collect(),
        )
    }

    #[test]
    fn select_and_iterate() {
        let b = batch(130);
        let set = b.select(|s| s.user_id.localpart().ends_with('7'));
        let got: Vec<usize> = set.indices().collect();
        let want: Vec<usize> = (0..130).filter(|i| i % 10 == 7).collect();
        assert_eq!(got, want);
        assert_eq!(set.len(), want.len());
        assert!(set.contains_index(127));
        assert!(!set.contains_index(128));
        assert!(!set.contains_index(10_000));
    }

    #[test]
    fn union_requires_same_batch() {
        let b = batch(70);
        let a = b.from_indices([1, 65]);
        let c = b.from_indices([2, 65, 500]);
        let u = a.union(&c).unwrap();
        assert_eq!(u.indices().collect::<Vec<_>>(), [1, 2, 65]);
        let other = batch(70).all();
        assert!(a.union(&other).is_none());
        assert!(b.none().is_empty());
        assert_eq!(b.all().len(), 70);
    }
}
