//! The presence router module API.
//!
//! A presence router decides which extra users, local or remote, receive a user's presence,
//! in addition to the users who share a room with them. This crate is what a router author
//! depends on: validated IDs ([`UserId`], [`ServerName`]), presence values
//! ([`PresenceState`], [`UserPresenceState`]), the [`PresenceRouter`] trait with
//! [`InterestedUsers`], the [`ModuleApi`] a router is built with, the [`RouterRegistry`] that
//! turns configuration into routers, and [`RouterSet`], which calls several routers and merges
//! their answers safely.
//!
//! See `docs/module-authors.md` for a guide and the reference contract this implements.

mod batch;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod module_api;
mod registry;
mod router;
mod set;
mod state;

pub use batch::{StateBatch, StateSet, UserStates};
pub use id::{DeviceId, IdError, MAX_USER_ID_LEN, RoomId, ServerName, UserId};
pub use module_api::{ForcedPresence, ModuleApi, ModuleApiError, ModuleCommand};
pub use registry::{
    ConfigError, FallbackFactory, RouterFactory, RouterModule, RouterRegistry, parse_typed_config,
};
pub use router::{InterestedUsers, PresenceRouter, RecipientFilter, RouterError};
pub use set::{AllowAll, DEFAULT_CALL_TIMEOUT, FilterSet, RouterSet, RouterStats};
pub use state::{BUSY_WIRE_NAME, Millis, PresenceState, UserPresenceState};

/// Re-exported so router crates implement [`PresenceRouter`] with the same macro version.
pub use async_trait::async_trait;
