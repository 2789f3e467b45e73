//! SQL for presence rows and the "send full presence" snapshot targets.
//!
//! Presence persistence is the hottest write path: every state change of every user ends up
//! here. Rows are upserted in chunks of [`CHUNK`] with one multi-row statement, prepared once
//! per connection and then only re-bound, so a batch of N updates costs about N/32 statement
//! executions and no SQL parsing.

use std::sync::{Arc, LazyLock};

use presence_router::{PresenceState, UserId, UserPresenceState};
use rusqlite::{CachedStatement, Connection, params};

use super::convert::{corrupt, get_str, get_u64, get_user_id, to_sql_int};
use crate::{StoreError, StreamId};

/// Rows per multi-row upsert (8 parameters each, far below SQLite's parameter limit).
const CHUNK: usize = 32;

const COLUMNS: usize = 8;

fn upsert_sql(rows: usize) -> String {
    let tuple = "(?, ?, ?, ?, ?, ?, ?, ?)";
    let values = vec![tuple; rows].join(", ");
    // The WHERE keeps a row from moving backwards when an older state arrives late; `>=`
    // lets the later of two entries with the same stream id win, as the caller expects.
    format!(
        "INSERT INTO presence (user_id, stream_id, state, last_active_ts,
             last_federation_update_ts, last_user_sync_ts, status_msg, currently_active)
         VALUES {values}
         ON CONFLICT (user_id) DO UPDATE SET
             stream_id = excluded.stream_id,
             state = excluded.state,
             last_active_ts = excluded.last_active_ts,
             last_federation_update_ts = excluded.last_federation_update_ts,
             last_user_sync_ts = excluded.last_user_sync_ts,
             status_msg = excluded.status_msg,
             currently_active = excluded.currently_active
         WHERE excluded.stream_id >= presence.stream_id"
    )
}

static UPSERT_CHUNK: LazyLock<String> = LazyLock::new(|| upsert_sql(CHUNK));
static UPSERT_ONE: LazyLock<String> = LazyLock::new(|| upsert_sql(1));

/// One presence row, converted and checked before anything is bound.
struct Row<'a> {
    user_id: &'a str,
    stream_id: i64,
    state: &'static str,
    last_active_ts: i64,
    last_federation_update_ts: i64,
    last_user_sync_ts: i64,
    status_msg: Option<&'a str>,
    currently_active: bool,
}

impl<'a> Row<'a> {
    fn new(stream_id: StreamId, s: &'a UserPresenceState) -> Result<Self, StoreError> {
        Ok(Self {
            user_id: s.user_id.as_str(),
            stream_id: to_sql_int(stream_id, "presence stream id")?,
            state: s.state.as_str(),
            last_active_ts: to_sql_int(s.last_active_ts, "last_active_ts")?,
            last_federation_update_ts: to_sql_int(
                s.last_federation_update_ts,
                "last_federation_update_ts",
            )?,
            last_user_sync_ts: to_sql_int(s.last_user_sync_ts, "last_user_sync_ts")?,
            status_msg: s.status_msg.as_deref(),
            currently_active: s.currently_active,
        })
    }

    fn bind(&self, stmt: &mut CachedStatement<'_>, first: usize) -> rusqlite::Result<()> {
        stmt.raw_bind_parameter(first, self.user_id)?;
        stmt.raw_bind_parameter(first + 1, self.stream_id)?;
        stmt.raw_bind_parameter(first + 2, self.state)?;
        stmt.raw_bind_parameter(first + 3, self.last_active_ts)?;
        stmt.raw_bind_parameter(first + 4, self.last_federation_update_ts)?;
        stmt.raw_bind_parameter(first + 5, self.last_user_sync_ts)?;
        stmt.raw_bind_parameter(first + 6, self.status_msg)?;
        stmt.raw_bind_parameter(first + 7, self.currently_active)
    }
}

/// Upserts the latest presence of each user, in input order.
pub(super) fn persist(
    conn: &Connection,
    states: &[(StreamId, UserPresenceState)],
) -> Result<(), StoreError> {
    let rows = states
        .iter()
        .map(|(id, s)| Row::new(*id, s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut chunks = rows.chunks_exact(CHUNK);
    if chunks.len() > 0 {
        let mut stmt = conn.prepare_cached(&UPSERT_CHUNK)?;
        for chunk in &mut chunks {
            for (i, row) in chunk.iter().enumerate() {
                row.bind(&mut stmt, i * COLUMNS + 1)?;
            }
            stmt.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut stmt = conn.prepare_cached(&UPSERT_ONE)?;
        for row in rest {
            row.bind(&mut stmt, 1)?;
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

/// Rows found unreadable at load that are named one by one in the log; the rest are counted.
const SKIPPED_ROWS_NAMED: usize = 10;

/// Every readable presence row. A row that cannot be read back (a bad user ID, an unknown
/// state, a value of the wrong type) is skipped with a warning rather than failing the load:
/// one bad row must not keep the server from starting. Those users start offline.
pub(super) fn load(conn: &Connection) -> Result<Vec<(StreamId, UserPresenceState)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, stream_id, state, last_active_ts, last_federation_update_ts,
                last_user_sync_ts, status_msg, currently_active
         FROM presence",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    let mut skipped = 0usize;
    while let Some(row) = rows.next()? {
        match read_row(row) {
            Ok(entry) => out.push(entry),
            Err(e) => {
                skipped += 1;
                if skipped <= SKIPPED_ROWS_NAMED {
                    let user = row.get_ref(0).ok().and_then(|v| v.as_str().ok());
                    tracing::warn!(user_id = user.unwrap_or("?"), error = %e, "Skipped an unreadable presence row; the user starts offline.");
                }
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            loaded = out.len(),
            "Skipped {skipped} unreadable presence rows at startup."
        );
    }
    Ok(out)
}

fn read_row(row: &rusqlite::Row<'_>) -> Result<(StreamId, UserPresenceState), StoreError> {
    let state_str = get_str(row, 2)?;
    let state = PresenceState::from_wire(state_str)
        .ok_or_else(|| corrupt("presence.state", format_args!("{state_str:?}")))?;
    let status_msg = row
        .get_ref(6)?
        .as_str_or_null()
        .map_err(rusqlite::Error::from)?;
    Ok((
        get_u64(row, 1, "presence.stream_id")?,
        UserPresenceState {
            user_id: get_user_id(row, 0, "presence.user_id")?,
            state,
            last_active_ts: get_u64(row, 3, "presence.last_active_ts")?,
            last_federation_update_ts: get_u64(row, 4, "presence.last_federation_update_ts")?,
            last_user_sync_ts: get_u64(row, 5, "presence.last_user_sync_ts")?,
            status_msg: status_msg.map(Arc::from),
            currently_active: row.get(7)?,
        },
    ))
}

pub(super) fn max_stream_id(conn: &Connection) -> Result<StreamId, StoreError> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT max(stream_id) FROM presence")?
        .query_row([], |r| r.get(0))?;
    let max = max.unwrap_or(0);
    u64::try_from(max).map_err(|_| corrupt("presence.stream_id", max))
}

pub(super) fn set_targets(
    conn: &Connection,
    users: &[UserId],
    stream_id: StreamId,
) -> Result<(), StoreError> {
    let stream_id = to_sql_int(stream_id, "presence stream id")?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO full_presence_targets (user_id, stream_id) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET stream_id = max(stream_id, excluded.stream_id)",
    )?;
    for user in users {
        stmt.execute(params![user.as_str(), stream_id])?;
    }
    Ok(())
}

pub(super) fn load_targets(conn: &Connection) -> Result<Vec<(UserId, StreamId)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT user_id, stream_id FROM full_presence_targets ORDER BY user_id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push((
            get_user_id(row, 0, "full_presence_targets.user_id")?,
            get_u64(row, 1, "full_presence_targets.stream_id")?,
        ));
    }
    Ok(out)
}

pub(super) fn delete_target(
    conn: &Connection,
    user_id: &UserId,
    up_to: StreamId,
) -> Result<bool, StoreError> {
    // A mark beyond i64 cannot exist, so "up to" such a value means "any mark".
    let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
    let deleted = conn
        .prepare_cached("DELETE FROM full_presence_targets WHERE user_id = ?1 AND stream_id <= ?2")?
        .execute(params![user_id.as_str(), up_to])?;
    Ok(deleted > 0)
}
