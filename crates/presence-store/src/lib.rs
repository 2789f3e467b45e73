//! Durable storage for Presenced.
//!
//! [`PresenceStore`] is everything the server persists: accounts, devices and access tokens,
//! rooms with their events and memberships, the latest presence of every user, the "send
//! full presence" targets, client filters and a small key/value table. The server is generic
//! over the trait; [`SqliteStore`] is the embedded backend (one file, WAL, one writer thread
//! with group commit, a pool of readers).
//!
//! Writes are batched off the request path: many concurrent writes share one transaction and
//! one commit, each is answered only once that commit succeeded, and a full write queue is
//! reported ([`StoreError::Overloaded`]) rather than buffered without bound.
//!
//! Every backend runs the same conformance suite through [`store_conformance!`].

pub mod conformance;
mod error;
mod model;
mod sqlite;
mod store;

pub use error::StoreError;
pub use model::{
    AccountDataEntry, DeviceRecord, Membership, MembershipChange, NewDevice, NewUser, OrderedEvent,
    RoomRecord, RoomUpdate, StoredEvent, StreamId, StreamOrdering, UserRecord, UserRoom,
};
pub use sqlite::{SqliteConfig, SqliteStore, Synchronous};
pub use store::{PresenceStore, StoreStats};
