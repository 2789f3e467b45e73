//! The presence engine: everything Presenced decides about presence, with no I/O.
//!
//! - [`machine`]: the state machine (per-device aggregation, update and timeout rules).
//! - [`Engine`]: users, rooms and the presence stream; the write side ([`Engine::apply`],
//!   [`Engine::tick`], [`Engine::finish`]) and the read side ([`Engine::sync`]).
//!
//! Time comes in as an argument (`now`, milliseconds since the epoch); routers are called by
//! the caller between [`Engine::apply`] and [`Engine::finish`], so the engine itself never
//! awaits anything. Spec: <https://spec.matrix.org/v1.15/client-server-api/#presence>.

mod config;
mod engine;
mod intern;
pub mod machine;
mod read;
mod rooms;
mod stamp;
mod timers;

pub use config::{EngineConfig, PresenceMode, Timers};
pub use engine::{Applied, Effects, Engine, EngineStats, Input, RemotePresence};
pub use intern::{RoomIdx, UserIdx};
pub use read::{Candidates, LocalOnline, Routed, SyncRead};
pub use rooms::StreamPos;
