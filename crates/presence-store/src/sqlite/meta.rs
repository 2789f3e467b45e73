//! SQL for the key/value `meta` table, where the server keeps small facts about itself
//! (stream positions, the server's identity) that have no table of their own.

use rusqlite::{Connection, params};

use super::convert::get_str;
use crate::StoreError;

pub(super) fn get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
    let mut rows = stmt.query([key])?;
    match rows.next()? {
        Some(row) => Ok(Some(get_str(row, 0)?.to_owned())),
        None => Ok(None),
    }
}

pub(super) fn set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}
