//! The presence engine: everything Presenced decides about presence, with no I/O.
//!
//! - [`machine`]: the state machine (per-device aggregation, update and timeout rules).
//! - [`Engine`]: the write side ([`Engine::apply`], [`Engine::tick`], [`Engine::finish`])
//!   and the read side ([`Engine::sync`]) over its representation: `users` (every per-user
//!   column, grown together), `rooms` (membership and room change logs), `stream` (stream
//!   position and the global change log), `bitset` and `stamp` (flat per-index marks) and
//!   `timers` (one deadline per user).
//!
//! Time comes in as an argument (`now`, milliseconds since the epoch); routers are called by
//! the caller between [`Engine::apply`] and [`Engine::finish`], so the engine itself never
//! awaits anything. Spec: <https://spec.matrix.org/v1.15/client-server-api/#presence>.

mod bitset;
mod config;
mod engine;
mod intern;
pub mod machine;
mod read;
mod rooms;
mod stamp;
mod stream;
mod timers;
mod users;

pub use config::{Audience, EngineConfig, PresenceMode, Timers};
pub use engine::{Applied, Effects, Engine, Input, RemotePresence, Undo};
pub use intern::UserIdx;
pub use read::{Candidates, LocalOnline, Routed, SyncRead};
pub use rooms::StreamPos;
