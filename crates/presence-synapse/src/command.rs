//! Synapse's replication commands: one UTF-8 line each, `NAME args`, no newline.
//!
//! Parsing mirrors `parse_command_from_line` (`synapse/replication/tcp/commands.py`): split at
//! the first space, look the name up. The commands a presence writer sends or handles are
//! typed; every other name (`USER_IP`, `FEDERATION_ACK`, `REMOTE_SERVER_UP`, `LOCK_RELEASED`,
//! `NEW_ACTIVE_TASK`, `CANCEL_TASK`, `ERROR`, or one added by a later Synapse) is kept as
//! [`Command::Other`] so that unknown commands are tolerated, not fatal.
//!
//! [`Command::to_line`] gives exactly Synapse's wire form, so `parse` then `to_line` returns
//! the same bytes for every line Synapse writes.

use std::fmt;

use presence_router::{DeviceId, IdError, UserId};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{StreamId, json::to_python_json};

/// Lines longer than this are refused before any parsing. Synapse has no such limit, but no
/// row a presence writer cares about comes near it, and it bounds what one bad message costs.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What `USER_SYNC` reports about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncState {
    /// The device's first concurrent sync began (wire `start`).
    Start,
    /// The device has not synced for a while (wire `end`).
    End,
}

impl SyncState {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::End => "end",
        }
    }
}

/// One replication command.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// `RDATA <stream> <instance_name> <token|batch> <row_json>`: one row of a stream.
    Rdata {
        /// The stream's name, e.g. `presence`.
        stream: String,
        /// The writer that produced the row.
        instance_name: String,
        /// The row's token; `None` is `batch`: more rows with the same token follow.
        token: Option<StreamId>,
        /// The row, kept as the JSON text received (decode it with [`crate::rows`]).
        row: Box<RawValue>,
    },
    /// `POSITION <stream> <instance_name> <prev_token> <new_token>`.
    Position {
        /// The stream's name.
        stream: String,
        /// The writer whose position this is.
        instance_name: String,
        /// The position before this announcement.
        prev_token: StreamId,
        /// The writer's position now.
        new_token: StreamId,
    },
    /// `REPLICATE ` (trailing space on the wire): every writer announces its positions.
    Replicate,
    /// `USER_SYNC <instance_id> <user_id> <device_id|None> <start|end> <last_sync_ms>`.
    UserSync {
        /// The sending process's random per-start ID (not its worker name).
        instance_id: String,
        /// Who is syncing.
        user_id: UserId,
        /// Which device; `None` on the wire when absent.
        device_id: Option<DeviceId>,
        /// Whether the device started or stopped syncing.
        state: SyncState,
        /// When the last sync happened, in ms since the epoch.
        last_sync_ms: u64,
    },
    /// `CLEAR_USER_SYNC <instance_id>`: the process stopped; forget its syncing users.
    ClearUserSync {
        /// The process's per-start ID.
        instance_id: String,
    },
    /// Any other command, kept verbatim.
    Other {
        /// The command name.
        name: String,
        /// Everything after the first space; `None` when the line had no space at all.
        rest: Option<String>,
    },
}

/// Why a line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The line is empty or starts with a space (no command name).
    #[error("empty command name")]
    Empty,
    /// The line is longer than [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes is too long")]
    TooLong(usize),
    /// The line contains a line break, which the wire format forbids.
    #[error("line contains a line break")]
    LineBreak,
    /// A known command lacks fields.
    #[error("{command}: expected {expected} fields")]
    MissingFields {
        /// The command name.
        command: &'static str,
        /// How many fields it takes.
        expected: usize,
    },
    /// A field that must not be empty is.
    #[error("{command}: field `{field}` is empty")]
    EmptyField {
        /// The command name.
        command: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A number field is not a non-negative decimal integer.
    #[error("{command}: field `{field}` is not a valid number")]
    BadNumber {
        /// The command name.
        command: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The `USER_SYNC` state is neither `start` nor `end`.
    #[error("USER_SYNC: invalid state")]
    BadSyncState,
    /// A user or device ID is invalid.
    #[error("{command}: invalid {field}: {source}")]
    BadId {
        /// The command name.
        command: &'static str,
        /// The field.
        field: &'static str,
        /// Why.
        source: IdError,
    },
    /// The RDATA row is not valid JSON.
    #[error("RDATA: row is not valid JSON: {0}")]
    BadJson(String),
}

const RDATA: &str = "RDATA";
const POSITION: &str = "POSITION";
const REPLICATE: &str = "REPLICATE";
const USER_SYNC: &str = "USER_SYNC";
const CLEAR_USER_SYNC: &str = "CLEAR_USER_SYNC";
/// The wire spelling of an absent device ID in `USER_SYNC` (Python's `str(None)`).
const NO_DEVICE: &str = "None";
const BATCH: &str = "batch";

impl Command {
    /// Parses one line as received from Redis. Never panics.
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(CommandError::TooLong(line.len()));
        }
        if line.contains(['\n', '\r']) {
            return Err(CommandError::LineBreak);
        }
        let (name, rest) = match line.split_once(' ') {
            Some((name, rest)) => (name, Some(rest)),
            None => (line, None),
        };
        if name.is_empty() {
            return Err(CommandError::Empty);
        }
        let args = rest.unwrap_or("");
        Ok(match name {
            RDATA => {
                let [stream, instance_name, token, row] = split_fields::<4>(RDATA, args)?;
                let token = match token {
                    BATCH => None,
                    t => Some(parse_number(RDATA, "token", t)?),
                };
                let row = serde_json::from_str::<Box<RawValue>>(row)
                    .map_err(|e| CommandError::BadJson(e.to_string()))?;
                Self::Rdata {
                    stream: non_empty(RDATA, "stream", stream)?,
                    instance_name: non_empty(RDATA, "instance_name", instance_name)?,
                    token,
                    row,
                }
            }
            POSITION => {
                let [stream, instance_name, prev, new] = split_fields::<4>(POSITION, args)?;
                Self::Position {
                    stream: non_empty(POSITION, "stream", stream)?,
                    instance_name: non_empty(POSITION, "instance_name", instance_name)?,
                    prev_token: parse_number(POSITION, "prev_token", prev)?,
                    new_token: parse_number(POSITION, "new_token", new)?,
                }
            }
            // Synapse ignores REPLICATE's arguments (`ReplicateCommand.from_line`).
            REPLICATE => Self::Replicate,
            USER_SYNC => {
                let [instance_id, user_id, device_id, state, last_sync_ms] =
                    split_fields::<5>(USER_SYNC, args)?;
                let user_id = UserId::parse(user_id).map_err(|source| CommandError::BadId {
                    command: USER_SYNC,
                    field: "user_id",
                    source,
                })?;
                let device_id = match device_id {
                    NO_DEVICE => None,
                    d => Some(DeviceId::parse(d).map_err(|source| CommandError::BadId {
                        command: USER_SYNC,
                        field: "device_id",
                        source,
                    })?),
                };
                let state = match state {
                    "start" => SyncState::Start,
                    "end" => SyncState::End,
                    _ => return Err(CommandError::BadSyncState),
                };
                Self::UserSync {
                    instance_id: non_empty(USER_SYNC, "instance_id", instance_id)?,
                    user_id,
                    device_id,
                    state,
                    last_sync_ms: parse_number(USER_SYNC, "last_sync_ms", last_sync_ms)?,
                }
            }
            CLEAR_USER_SYNC => Self::ClearUserSync {
                instance_id: non_empty(CLEAR_USER_SYNC, "instance_id", args)?,
            },
            other => Self::Other {
                name: other.to_owned(),
                rest: rest.map(str::to_owned),
            },
        })
    }

    /// Builds an `RDATA` command, encoding `row` as Synapse does (compact, ASCII-only).
    pub fn rdata<T: Serialize + ?Sized>(
        stream: &str,
        instance_name: &str,
        token: Option<StreamId>,
        row: &T,
    ) -> Result<Self, CommandError> {
        let json = to_python_json(row).map_err(|e| CommandError::BadJson(e.to_string()))?;
        let row = RawValue::from_string(json).map_err(|e| CommandError::BadJson(e.to_string()))?;
        Ok(Self::Rdata {
            stream: stream.to_owned(),
            instance_name: instance_name.to_owned(),
            token,
            row,
        })
    }

    /// Builds a `POSITION` command.
    pub fn position(
        stream: &str,
        instance_name: &str,
        prev_token: StreamId,
        new_token: StreamId,
    ) -> Self {
        Self::Position {
            stream: stream.to_owned(),
            instance_name: instance_name.to_owned(),
            prev_token,
            new_token,
        }
    }

    /// The command's wire name.
    pub fn name(&self) -> &str {
        match self {
            Self::Rdata { .. } => RDATA,
            Self::Position { .. } => POSITION,
            Self::Replicate => REPLICATE,
            Self::UserSync { .. } => USER_SYNC,
            Self::ClearUserSync { .. } => CLEAR_USER_SYNC,
            Self::Other { name, .. } => name,
        }
    }

    /// The line as sent on the wire (the same as `Display`).
    pub fn to_line(&self) -> String {
        self.to_string()
    }

    /// Whether this is an `RDATA` or `POSITION` that `instance_name` itself published: a
    /// process receives its own publishes and must drop those two (`RH:533-536, 627-629`).
    pub fn is_echo_of(&self, instance_name: &str) -> bool {
        match self {
            Self::Rdata {
                instance_name: i, ..
            }
            | Self::Position {
                instance_name: i, ..
            } => i == instance_name,
            _ => false,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rdata {
                stream,
                instance_name,
                token,
                row,
            } => {
                write!(f, "{RDATA} {stream} {instance_name} ")?;
                match token {
                    Some(t) => write!(f, "{t}")?,
                    None => f.write_str(BATCH)?,
                }
                write!(f, " {}", row.get())
            }
            Self::Position {
                stream,
                instance_name,
                prev_token,
                new_token,
            } => write!(
                f,
                "{POSITION} {stream} {instance_name} {prev_token} {new_token}"
            ),
            // `ReplicateCommand.to_line()` is "", joined to the name with a space.
            Self::Replicate => write!(f, "{REPLICATE} "),
            Self::UserSync {
                instance_id,
                user_id,
                device_id,
                state,
                last_sync_ms,
            } => write!(
                f,
                "{USER_SYNC} {instance_id} {user_id} {} {} {last_sync_ms}",
                device_id.as_ref().map_or(NO_DEVICE, DeviceId::as_str),
                state.as_str()
            ),
            Self::ClearUserSync { instance_id } => write!(f, "{CLEAR_USER_SYNC} {instance_id}"),
            Self::Other { name, rest } => match rest {
                Some(rest) => write!(f, "{name} {rest}"),
                None => f.write_str(name),
            },
        }
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        // RawValue has no PartialEq; the wire forms are canonical enough for equality.
        self.to_line() == other.to_line()
    }
}

/// Splits `args` like Python's `args.split(" ", N - 1)` unpacked into N names: the last field
/// takes the rest of the line, spaces included.
fn split_fields<'a, const N: usize>(
    command: &'static str,
    args: &'a str,
) -> Result<[&'a str; N], CommandError> {
    let mut out = [""; N];
    let mut parts = args.splitn(N, ' ');
    for slot in &mut out {
        *slot = parts.next().ok_or(CommandError::MissingFields {
            command,
            expected: N,
        })?;
    }
    Ok(out)
}

fn parse_number(command: &'static str, field: &'static str, s: &str) -> Result<u64, CommandError> {
    // Python's int() accepts more ("+5", "0_1", " 7"); Synapse never writes those, and being
    // strict keeps parse∘format the identity.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::BadNumber { command, field });
    }
    s.parse()
        .map_err(|_| CommandError::BadNumber { command, field })
}

fn non_empty(command: &'static str, field: &'static str, s: &str) -> Result<String, CommandError> {
    if s.is_empty() {
        return Err(CommandError::EmptyField { command, field });
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests;
