//! SQL for rooms, their events, current state and memberships.
//!
//! Events get their stream ordering from the `events` table's autoincrement key. The room's
//! current state is kept up to date on append (one row per `(type, state_key)`), so reading
//! it never scans the room's history.

use presence_router::{Millis, RoomId, UserId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::convert::{corrupt, get_room_id, get_str, get_u64, get_user_id, to_sql_int};
use crate::{
    Membership, OrderedEvent, RoomRecord, RoomUpdate, StoreError, StoredEvent, StreamOrdering,
    UserRoom,
};

pub(super) fn insert_room(conn: &Connection, room: &RoomRecord) -> Result<(), StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO rooms (room_id, creator, is_public, creation_ts) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_id) DO NOTHING",
        )?
        .execute(params![
            room.room_id.as_str(),
            room.creator.as_str(),
            room.is_public,
            to_sql_int(room.creation_ts, "creation_ts")?,
        ])?;
    if inserted == 0 {
        return Err(StoreError::RoomExists);
    }
    Ok(())
}

pub(super) fn get_room(
    conn: &Connection,
    room_id: &RoomId,
) -> Result<Option<RoomRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT creator, is_public, creation_ts FROM rooms WHERE room_id = ?1")?;
    let mut rows = stmt.query([room_id.as_str()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(RoomRecord {
        room_id: room_id.clone(),
        creator: get_user_id(row, 0, "rooms.creator")?,
        is_public: row.get(1)?,
        creation_ts: get_u64(row, 2, "rooms.creation_ts")?,
    }))
}

fn room_exists(conn: &Connection, room_id: &RoomId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM rooms WHERE room_id = ?1")?
        .query_row([room_id.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Appends the events, updates current state, then applies the membership changes.
pub(super) fn apply_room_update(
    conn: &Connection,
    room_id: &RoomId,
    update: &RoomUpdate,
) -> Result<Vec<StreamOrdering>, StoreError> {
    if !room_exists(conn, room_id)? {
        return Err(StoreError::NotFound);
    }
    let room = room_id.as_str();
    let mut orderings = Vec::with_capacity(update.events.len());
    if !update.events.is_empty() {
        let mut insert = conn.prepare_cached(
            "INSERT INTO events
                 (event_id, room_id, event_type, state_key, sender, origin_server_ts, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (event_id) DO NOTHING",
        )?;
        let mut set_state = conn.prepare_cached(
            "INSERT INTO current_state (room_id, event_type, state_key, stream_ordering)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_id, event_type, state_key)
             DO UPDATE SET stream_ordering = excluded.stream_ordering",
        )?;
        for event in &update.events {
            let inserted = insert.execute(params![
                event.event_id,
                room,
                event.event_type,
                event.state_key,
                event.sender.as_str(),
                to_sql_int(event.origin_server_ts, "origin_server_ts")?,
                event.content_json,
            ])?;
            if inserted == 0 {
                return Err(StoreError::EventExists);
            }
            let ordering = conn.last_insert_rowid();
            if let Some(state_key) = &event.state_key {
                set_state.execute(params![room, event.event_type, state_key, ordering])?;
            }
            orderings.push(
                u64::try_from(ordering).map_err(|_| corrupt("events.stream_ordering", ordering))?,
            );
        }
    }
    if !update.memberships.is_empty() {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, updated_ts)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (room_id, user_id) DO UPDATE SET
                 membership = excluded.membership,
                 event_id = excluded.event_id,
                 updated_ts = excluded.updated_ts",
        )?;
        for change in &update.memberships {
            upsert.execute(params![
                room,
                change.user_id.as_str(),
                change.membership.as_str(),
                change.event_id,
                to_sql_int(change.ts, "membership ts")?,
            ])?;
        }
    }
    Ok(orderings)
}

const EVENT_COLUMNS: &str = "e.stream_ordering, e.event_id, e.event_type, e.state_key, e.sender, e.origin_server_ts, e.content";

fn read_event(row: &Row<'_>) -> Result<OrderedEvent, StoreError> {
    Ok(OrderedEvent {
        stream_ordering: get_u64(row, 0, "events.stream_ordering")?,
        event: StoredEvent {
            event_id: row.get(1)?,
            event_type: row.get(2)?,
            state_key: row.get(3)?,
            sender: get_user_id(row, 4, "events.sender")?,
            origin_server_ts: get_u64(row, 5, "events.origin_server_ts")?,
            content_json: row.get(6)?,
        },
    })
}

pub(super) fn room_state(
    conn: &Connection,
    room_id: &RoomId,
) -> Result<Vec<OrderedEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM current_state c
         JOIN events e ON e.stream_ordering = c.stream_ordering
         WHERE c.room_id = ?1 ORDER BY e.stream_ordering"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([room_id.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read_event(row)?);
    }
    Ok(out)
}

pub(super) fn events_since(
    conn: &Connection,
    room_id: &RoomId,
    after: StreamOrdering,
    limit: usize,
) -> Result<Vec<OrderedEvent>, StoreError> {
    let Ok(after) = i64::try_from(after) else {
        // Past every ordering SQLite can hold.
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e
         WHERE e.room_id = ?1 AND e.stream_ordering > ?2
         ORDER BY e.stream_ordering LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![room_id.as_str(), after, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read_event(row)?);
    }
    Ok(out)
}

pub(super) fn max_stream_ordering(conn: &Connection) -> Result<StreamOrdering, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT COALESCE(MAX(stream_ordering), 0) FROM events")?;
    let mut rows = stmt.query([])?;
    match rows.next()? {
        Some(row) => get_u64(row, 0, "events.stream_ordering"),
        None => Ok(0),
    }
}

pub(super) fn recent_events(
    conn: &Connection,
    room_id: &RoomId,
    up_to: StreamOrdering,
    limit: usize,
) -> Result<Vec<OrderedEvent>, StoreError> {
    // Orderings above i64::MAX cannot exist, so such a bound means "everything".
    let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e
         WHERE e.room_id = ?1 AND e.stream_ordering <= ?2
         ORDER BY e.stream_ordering DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![room_id.as_str(), up_to, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read_event(row)?);
    }
    out.reverse();
    Ok(out)
}

pub(super) fn user_rooms(conn: &Connection, user_id: &UserId) -> Result<Vec<UserRoom>, StoreError> {
    // The latest ordering per room is a lookup at the end of the (room_id, stream_ordering)
    // index, so this stays one cheap query however many events the rooms hold.
    let mut stmt = conn.prepare_cached(
        "SELECT m.room_id, m.membership, e.stream_ordering,
                (SELECT MAX(x.stream_ordering) FROM events x WHERE x.room_id = m.room_id)
         FROM memberships m LEFT JOIN events e ON e.event_id = m.event_id
         WHERE m.user_id = ?1 ORDER BY m.room_id",
    )?;
    let mut rows = stmt.query([user_id.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let membership_ordering = match row.get::<_, Option<i64>>(2)? {
            Some(v) => Some(u64::try_from(v).map_err(|_| corrupt("events.stream_ordering", v))?),
            None => None,
        };
        let latest: Option<i64> = row.get(3)?;
        let latest_ordering = u64::try_from(latest.unwrap_or(0))
            .map_err(|_| corrupt("events.stream_ordering", format_args!("{latest:?}")))?;
        out.push(UserRoom {
            room_id: get_room_id(row, 0, "memberships.room_id")?,
            membership: read_membership(row, 1)?,
            membership_ordering,
            latest_ordering,
        });
    }
    Ok(out)
}

pub(super) fn insert_alias(
    conn: &Connection,
    alias: &str,
    room_id: &RoomId,
    creator: &UserId,
    ts: Millis,
) -> Result<bool, StoreError> {
    if !room_exists(conn, room_id)? {
        return Err(StoreError::NotFound);
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (alias) DO NOTHING",
        )?
        .execute(params![
            alias,
            room_id.as_str(),
            creator.as_str(),
            to_sql_int(ts, "created_ts")?,
        ])?;
    Ok(inserted == 1)
}

pub(super) fn resolve_alias(conn: &Connection, alias: &str) -> Result<Option<RoomId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT room_id FROM room_aliases WHERE alias = ?1")?;
    let mut rows = stmt.query([alias])?;
    match rows.next()? {
        Some(row) => Ok(Some(get_room_id(row, 0, "room_aliases.room_id")?)),
        None => Ok(None),
    }
}

fn read_membership(row: &Row<'_>, index: usize) -> Result<Membership, StoreError> {
    let s = get_str(row, index)?;
    Membership::parse(s).ok_or_else(|| corrupt("memberships.membership", format_args!("{s:?}")))
}

pub(super) fn membership(
    conn: &Connection,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<Membership>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT membership FROM memberships WHERE room_id = ?1 AND user_id = ?2")?;
    let mut rows = stmt.query([room_id.as_str(), user_id.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_membership(row, 0)?)),
        None => Ok(None),
    }
}

pub(super) fn room_members(
    conn: &Connection,
    room_id: &RoomId,
) -> Result<Vec<(UserId, Membership)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, membership FROM memberships WHERE room_id = ?1 ORDER BY user_id",
    )?;
    let mut rows = stmt.query([room_id.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push((
            get_user_id(row, 0, "memberships.user_id")?,
            read_membership(row, 1)?,
        ));
    }
    Ok(out)
}

pub(super) fn rooms_of(
    conn: &Connection,
    user_id: &UserId,
) -> Result<Vec<(RoomId, Membership)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, membership FROM memberships WHERE user_id = ?1 ORDER BY room_id",
    )?;
    let mut rows = stmt.query([user_id.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push((
            get_room_id(row, 0, "memberships.room_id")?,
            read_membership(row, 1)?,
        ));
    }
    Ok(out)
}

/// Every joined pair, in primary-key order (grouped by room). Consecutive rows of one room
/// share one parsed [`RoomId`], which keeps a million-row load to one ID parse per room.
pub(super) fn all_joined(conn: &Connection) -> Result<Vec<(RoomId, UserId)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, user_id FROM memberships WHERE membership = 'join'
         ORDER BY room_id, user_id",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    let mut current: Option<RoomId> = None;
    while let Some(row) = rows.next()? {
        let room_str = get_str(row, 0)?;
        let room = match &current {
            Some(room) if room.as_str() == room_str => room.clone(),
            _ => {
                let room = get_room_id(row, 0, "memberships.room_id")?;
                current = Some(room.clone());
                room
            }
        };
        out.push((room, get_user_id(row, 1, "memberships.user_id")?));
    }
    Ok(out)
}
