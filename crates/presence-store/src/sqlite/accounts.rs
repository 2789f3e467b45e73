//! SQL for accounts: users, devices, access tokens and client filters.
//!
//! Access tokens are stored as their SHA-256 only: a token is looked up by hashing what the
//! client presents, so the plaintext never reaches the database (or the write queue).

use presence_router::{DeviceId, UserId};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::convert::{corrupt, get_device_id, get_str, get_u64, get_user_id, to_sql_int};
use crate::{DeviceRecord, NewDevice, NewUser, StoreError, UserRecord};

/// The stored form of an access token.
pub(super) fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(super) fn insert_user(conn: &Connection, user: &NewUser) -> Result<(), StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO users (user_id, password_hash, admin, creation_ts) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id) DO NOTHING",
        )?
        .execute(params![
            user.user_id.as_str(),
            user.password_hash,
            user.admin,
            to_sql_int(user.creation_ts, "creation_ts")?,
        ])?;
    if inserted == 0 {
        return Err(StoreError::UserExists);
    }
    Ok(())
}

pub(super) fn get_user(
    conn: &Connection,
    user_id: &UserId,
) -> Result<Option<UserRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT password_hash, admin, creation_ts FROM users WHERE user_id = ?1")?;
    let mut rows = stmt.query([user_id.as_str()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(UserRecord {
        user_id: user_id.clone(),
        password_hash: row.get(0)?,
        admin: row.get(1)?,
        creation_ts: get_u64(row, 2, "users.creation_ts")?,
    }))
}

pub(super) fn user_exists(conn: &Connection, user_id: &UserId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?
        .query_row([user_id.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(super) fn count_users(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM users")?
        .query_row([], |r| r.get(0))?;
    u64::try_from(n).map_err(|_| corrupt("users", format_args!("negative count {n}")))
}

/// Creates the device or refreshes it, and makes `token_hash` its only token.
pub(super) fn upsert_device(
    conn: &Connection,
    device: &NewDevice,
    token_hash: &[u8],
) -> Result<(), StoreError> {
    if !user_exists(conn, &device.user_id)? {
        return Err(StoreError::NotFound);
    }
    let ts = to_sql_int(device.ts, "ts")?;
    let user = device.user_id.as_str();
    let dev = device.device_id.as_str();
    conn.prepare_cached(
        "INSERT INTO devices (user_id, device_id, display_name, created_ts, token_ts)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET
             display_name = coalesce(excluded.display_name, display_name),
             token_ts = excluded.token_ts",
    )?
    .execute(params![user, dev, device.display_name, ts])?;
    conn.prepare_cached("DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2")?
        .execute([user, dev])?;
    conn.prepare_cached(
        "INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![token_hash, user, dev])?;
    Ok(())
}

pub(super) fn resolve_token(
    conn: &Connection,
    token_hash: &[u8],
) -> Result<Option<(UserId, DeviceId)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT user_id, device_id FROM access_tokens WHERE token_hash = ?1")?;
    let mut rows = stmt.query([token_hash])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some((
        get_user_id(row, 0, "access_tokens.user_id")?,
        get_device_id(row, 1, "access_tokens.device_id")?,
    )))
}

/// Deletes a device; its tokens go with it (foreign key cascade).
pub(super) fn delete_device(
    conn: &Connection,
    user_id: &UserId,
    device_id: &DeviceId,
) -> Result<bool, StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2")?
        .execute([user_id.as_str(), device_id.as_str()])?;
    Ok(deleted > 0)
}

pub(super) fn list_devices(
    conn: &Connection,
    user_id: &UserId,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, display_name, created_ts, token_ts FROM devices
         WHERE user_id = ?1 ORDER BY device_id",
    )?;
    let mut rows = stmt.query([user_id.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(DeviceRecord {
            user_id: user_id.clone(),
            device_id: get_device_id(row, 0, "devices.device_id")?,
            display_name: row.get(1)?,
            created_ts: get_u64(row, 2, "devices.created_ts")?,
            token_ts: get_u64(row, 3, "devices.token_ts")?,
        });
    }
    Ok(out)
}

/// Stores a filter under the user's next free number (as the reference homeserver does, IDs
/// are small per-user integers).
pub(super) fn insert_filter(
    conn: &Connection,
    user_id: &UserId,
    filter_json: &str,
) -> Result<String, StoreError> {
    if !user_exists(conn, user_id)? {
        return Err(StoreError::NotFound);
    }
    let id: i64 = conn
        .prepare_cached("SELECT coalesce(max(filter_id) + 1, 0) FROM filters WHERE user_id = ?1")?
        .query_row([user_id.as_str()], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO filters (user_id, filter_id, filter_json) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![user_id.as_str(), id, filter_json])?;
    Ok(id.to_string())
}

pub(super) fn get_filter(
    conn: &Connection,
    user_id: &UserId,
    filter_id: &str,
) -> Result<Option<String>, StoreError> {
    // IDs this store hands out are canonical decimal numbers; any other spelling ("+1",
    // "01") names no filter.
    let id = match filter_id.parse::<i64>() {
        Ok(id) if id >= 0 && id.to_string() == filter_id => id,
        _ => return Ok(None),
    };
    let mut stmt = conn
        .prepare_cached("SELECT filter_json FROM filters WHERE user_id = ?1 AND filter_id = ?2")?;
    let mut rows = stmt.query(params![user_id.as_str(), id])?;
    match rows.next()? {
        Some(row) => Ok(Some(get_str(row, 0)?.to_owned())),
        None => Ok(None),
    }
}
