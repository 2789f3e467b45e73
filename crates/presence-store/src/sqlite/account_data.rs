//! SQL for client account data: global (`room_id` '') and per-room entries, each with the
//! stream position of its latest write.

use presence_router::{RoomId, UserId};
use rusqlite::{Connection, params};

use super::{
    accounts::user_exists,
    convert::{corrupt, get_str, get_u64, get_user_id, to_sql_int},
};
use crate::{AccountDataEntry, StoreError, StreamId};

fn room_key(room: Option<&RoomId>) -> &str {
    room.map_or("", RoomId::as_str)
}

fn entry(row: &rusqlite::Row<'_>) -> Result<AccountDataEntry, StoreError> {
    let room = get_str(row, 1)?;
    let room = if room.is_empty() {
        None
    } else {
        Some(
            RoomId::parse(room)
                .map_err(|e| corrupt("account_data.room_id", format_args!("{e}: {room:?}")))?,
        )
    };
    Ok(AccountDataEntry {
        user_id: get_user_id(row, 0, "account_data.user_id")?,
        room_id: room,
        data_type: get_str(row, 2)?.to_owned(),
        content: get_str(row, 3)?.to_owned(),
        stream_id: get_u64(row, 4, "account_data.stream_id")?,
    })
}

/// Replaces an entry of an existing user (else [`StoreError::NotFound`]); returns its new
/// stream position, above every other entry's.
pub(super) fn put(
    conn: &Connection,
    user_id: &UserId,
    room: Option<&RoomId>,
    data_type: &str,
    content: &str,
) -> Result<StreamId, StoreError> {
    if !user_exists(conn, user_id)? {
        return Err(StoreError::NotFound);
    }
    let next = max_stream_id(conn)? + 1;
    conn.prepare_cached(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (user_id, room_id, data_type) \
         DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
    )?
    .execute(params![
        user_id.as_str(),
        room_key(room),
        data_type,
        content,
        to_sql_int(next, "account_data.stream_id")?
    ])?;
    Ok(next)
}

pub(super) fn get(
    conn: &Connection,
    user_id: &UserId,
    room: Option<&RoomId>,
    data_type: &str,
) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT content FROM account_data WHERE user_id = ?1 AND room_id = ?2 AND data_type = ?3",
    )?;
    let mut rows = stmt.query(params![user_id.as_str(), room_key(room), data_type])?;
    match rows.next()? {
        Some(row) => Ok(Some(get_str(row, 0)?.to_owned())),
        None => Ok(None),
    }
}

/// A user's entries written after `since` (all of them for `None`), oldest first.
pub(super) fn since(
    conn: &Connection,
    user_id: &UserId,
    since: Option<StreamId>,
) -> Result<Vec<AccountDataEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, room_id, data_type, content, stream_id FROM account_data \
         WHERE user_id = ?1 AND stream_id > ?2 ORDER BY stream_id",
    )?;
    let since = match since {
        Some(s) => to_sql_int(s, "account_data.stream_id")?,
        None => -1,
    };
    let mut rows = stmt.query(params![user_id.as_str(), since])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(entry(row)?);
    }
    Ok(out)
}

/// Every user's entries of `data_type`, in stream order (for routers that follow one type).
pub(super) fn of_type(
    conn: &Connection,
    data_type: &str,
) -> Result<Vec<AccountDataEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, room_id, data_type, content, stream_id FROM account_data \
         WHERE data_type = ?1 ORDER BY stream_id",
    )?;
    let mut rows = stmt.query([data_type])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(entry(row)?);
    }
    Ok(out)
}

pub(super) fn max_stream_id(conn: &Connection) -> Result<StreamId, StoreError> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT max(stream_id) FROM account_data")?
        .query_row([], |r| r.get(0))?;
    Ok(max.map_or(0, |m| u64::try_from(m).unwrap_or(0)))
}
