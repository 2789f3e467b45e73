//! Conversions between Rust values and SQLite columns.
//!
//! SQLite integers are signed 64-bit; Presenced's timestamps and stream positions are `u64`.
//! Values above `i64::MAX` are refused on the way in, and negative or malformed values found
//! on the way out are reported as corruption instead of being silently wrapped.

use std::fmt::Display;

use presence_router::{DeviceId, RoomId, UserId};
use rusqlite::Row;

use crate::StoreError;

/// A `u64` as a SQLite integer.
pub(super) fn to_sql_int(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange(what))
}

/// A SQLite integer column as a `u64`.
pub(super) fn get_u64(row: &Row<'_>, index: usize, what: &str) -> Result<u64, StoreError> {
    let v: i64 = row.get(index)?;
    u64::try_from(v).map_err(|_| corrupt(what, format_args!("negative value {v}")))
}

/// A text column, borrowed from the row.
pub(super) fn get_str<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r str, StoreError> {
    Ok(row
        .get_ref(index)?
        .as_str()
        .map_err(rusqlite::Error::from)?)
}

/// A user ID column.
pub(super) fn get_user_id(row: &Row<'_>, index: usize, what: &str) -> Result<UserId, StoreError> {
    let s = get_str(row, index)?;
    UserId::parse(s).map_err(|e| corrupt(what, format_args!("{e}: {s:?}")))
}

/// A room ID column.
pub(super) fn get_room_id(row: &Row<'_>, index: usize, what: &str) -> Result<RoomId, StoreError> {
    let s = get_str(row, index)?;
    RoomId::parse(s).map_err(|e| corrupt(what, format_args!("{e}: {s:?}")))
}

/// A device ID column.
pub(super) fn get_device_id(
    row: &Row<'_>,
    index: usize,
    what: &str,
) -> Result<DeviceId, StoreError> {
    let s = get_str(row, index)?;
    DeviceId::parse(s).map_err(|e| corrupt(what, format_args!("{e}: {s:?}")))
}

/// A corruption error naming the column.
pub(super) fn corrupt(what: &str, detail: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}
