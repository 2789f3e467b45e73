//! The `presence_federation` stream as its writer keeps it: ad-hoc sends (keep-alive pings,
//! presence for newly joined servers and users, module calls) that Synapse's federation
//! sender turns into EDUs, since it cannot derive them from `presence` rows.
//!
//! As in Synapse (`PresenceFederationQueue`), the stream lives in memory only: each entry is
//! one token for a set of destinations and a set of users (every pair is a row), tokens start
//! at 1 at every start of the writer (receivers accept the reset through their
//! `prev <= current <= new` check), and entries are kept five minutes for
//! `get_repl_stream_updates`. Presence is ephemeral: a sender down longer misses those sends
//! and the next change or ping corrects it.

use std::{collections::VecDeque, time::Duration};

use presence_router::{ServerName, UserId};

use crate::{PresenceFederationRow, StreamId};

/// How long entries are kept for catching up (`_KEEP_ITEMS_IN_QUEUE_FOR_MS`).
pub const RETENTION: Duration = Duration::from_secs(5 * 60);

struct Entry {
    /// Milliseconds on the caller's clock.
    at_ms: u64,
    id: StreamId,
    destinations: Vec<ServerName>,
    users: Vec<UserId>,
}

impl Entry {
    fn rows(&self) -> impl Iterator<Item = PresenceFederationRow> + '_ {
        self.destinations.iter().flat_map(move |d| {
            self.users
                .iter()
                .map(move |u| PresenceFederationRow::new(d.clone(), u.clone()))
        })
    }
}

/// One page of [`FederationQueue::updates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationUpdates {
    /// `(token, row)` in token order.
    pub updates: Vec<(StreamId, PresenceFederationRow)>,
    /// Where the page ends.
    pub upto_token: StreamId,
    /// Whether rows up to the requested token remain.
    pub limited: bool,
}

/// The in-memory `presence_federation` stream.
pub struct FederationQueue {
    next_id: StreamId,
    entries: VecDeque<Entry>,
}

impl Default for FederationQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl FederationQueue {
    /// An empty stream at token 0.
    pub fn new() -> Self {
        Self {
            next_id: 1,
            entries: VecDeque::new(),
        }
    }

    /// The last token written (0 before the first).
    pub fn current_token(&self) -> StreamId {
        self.next_id - 1
    }

    /// Adds an entry at `now_ms` (dropping those older than [`RETENTION`]); returns its token
    /// and its rows, in the order they are published. Nothing is added when either set is
    /// empty.
    pub fn push(
        &mut self,
        now_ms: u64,
        mut destinations: Vec<ServerName>,
        mut users: Vec<UserId>,
    ) -> Option<(StreamId, Vec<PresenceFederationRow>)> {
        destinations.sort_unstable();
        destinations.dedup();
        users.sort_unstable();
        users.dedup();
        if destinations.is_empty() || users.is_empty() {
            return None;
        }
        self.expire(now_ms);
        let id = self.next_id;
        self.next_id += 1;
        let entry = Entry {
            at_ms: now_ms,
            id,
            destinations,
            users,
        };
        let rows = entry.rows().collect();
        self.entries.push_back(entry);
        Some((id, rows))
    }

    /// Drops entries older than [`RETENTION`] at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let keep_from = now_ms.saturating_sub(RETENTION.as_millis() as u64);
        while self.entries.front().is_some_and(|e| e.at_ms < keep_from) {
            self.entries.pop_front();
        }
    }

    /// Rows with `from < token <= upto`, whole entries at a time, stopping once more than
    /// `target_rows` are gathered (Synapse's `get_replication_rows`).
    pub fn updates(&self, from: StreamId, upto: StreamId, target_rows: usize) -> FederationUpdates {
        let mut out = FederationUpdates {
            updates: Vec::new(),
            upto_token: upto,
            limited: false,
        };
        // One entry per token, in order: the first wanted one is found by arithmetic.
        let first_kept = self.entries.front().map_or(self.next_id, |e| e.id);
        let skip = (from + 1).saturating_sub(first_kept) as usize;
        for entry in self.entries.iter().skip(skip) {
            if entry.id <= from {
                continue;
            }
            if entry.id > upto {
                break;
            }
            out.upto_token = entry.id;
            out.updates.extend(entry.rows().map(|r| (entry.id, r)));
            if out.updates.len() > target_rows {
                out.limited = true;
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(name: &str) -> ServerName {
        ServerName::parse(name).unwrap()
    }
    fn u(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn entries_fan_out_into_rows_under_one_token() {
        let mut q = FederationQueue::new();
        assert_eq!(q.current_token(), 0);
        let (id, rows) = q
            .push(
                1_000,
                vec![s("b.org"), s("a.org"), s("a.org")],
                vec![u("@x:here"), u("@y:here")],
            )
            .unwrap();
        assert_eq!(id, 1);
        assert_eq!(rows.len(), 4, "two servers (deduplicated) times two users");
        assert_eq!(
            rows[0],
            PresenceFederationRow::new(s("a.org"), u("@x:here"))
        );
        assert!(q.push(1_000, vec![], vec![u("@x:here")]).is_none());
        assert_eq!(q.current_token(), 1);
    }

    #[test]
    fn updates_page_by_whole_entries_and_expire_after_five_minutes() {
        let mut q = FederationQueue::new();
        for i in 0..5u64 {
            q.push(i * 1_000, vec![s("a.org"), s("b.org")], vec![u("@x:here")]);
        }
        let all = q.updates(0, 5, 100);
        assert_eq!(all.updates.len(), 10);
        assert_eq!((all.upto_token, all.limited), (5, false));
        let page = q.updates(1, 5, 3);
        assert_eq!(page.upto_token, 3, "entries 2 and 3, then more than 3 rows");
        assert!(page.limited);
        assert!(page.updates.iter().all(|(id, _)| (2..=3).contains(id)));
        assert_eq!(q.updates(5, 5, 100).updates.len(), 0);

        q.expire(RETENTION.as_millis() as u64 + 2_500);
        let kept = q.updates(0, 5, 100);
        assert!(kept.updates.iter().all(|(id, _)| *id >= 4), "{kept:?}");
        assert_eq!(kept.upto_token, 5);
    }
}
