//! The `rc_*` limits on logins, registration, rooms and messages, applied where the
//! reference homeserver applies them (the call sites say which of its functions they
//! follow):
//!
//! - `rc_login.address`: every `POST /login`, by client address, before anything else
//!   (`LoginRestServlet.on_POST`).
//! - `rc_login.failed_attempts`: checked without counting before the password is, counted
//!   when it is wrong, by the (lowercased) user ID named (`AuthHandler.validate_login`).
//! - `rc_login.account`: counted once the password is right, by user ID
//!   (`LoginRestServlet._complete_login`).
//! - `rc_registration`: checked without counting on each `POST /register`, counted when an
//!   account is created, by client address; shared-secret registration is not limited
//!   (`RegisterRestServlet.on_POST`, `RegistrationHandler.register_user`).
//! - `rc_joins.local` by user and `rc_joins_per_room` (checked only) by room, for a join of
//!   a room the user is not in; each join is counted in its room's bucket afterwards
//!   (`RoomMemberHandler.update_membership`, `_on_user_joined_room`).
//! - `rc_invites.per_room`, `.per_user` (the invitee) and `.per_issuer`
//!   (`RoomMemberHandler.ratelimit_invite`); invites at room creation count against
//!   `per_room` only (`ratelimit_multiple_invites`).
//! - `rc_room_creation`, checked, then `rc_message`, then counted (`RoomCreationHandler`).
//! - `rc_message`: each event a client sends, membership events included
//!   (`EventCreationHandler.handle_new_client_event`).
//!
//! The reference exempts application services and users with a rate-limit override; neither
//! exists in Presenced, so nobody is exempt. A request without a known client address
//! (served in-process, not over a socket) is not limited by address, as the reference
//! skips the address limit of a registration without one.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use presence_router::{RoomId, UserId};

use crate::{
    config::RcLimits,
    error::{ApiError, Limiter},
    ratelimit::{RateLimiter, RetryAfter},
};

/// Every `rc_*` bucket besides `rc_presence`.
pub struct Limits {
    login_address: RateLimiter<IpAddr>,
    login_account: RateLimiter<String>,
    login_failed: RateLimiter<String>,
    registration: RateLimiter<IpAddr>,
    joins_local: RateLimiter<UserId>,
    joins_per_room: RateLimiter<RoomId>,
    room_creation: RateLimiter<UserId>,
    message: RateLimiter<UserId>,
    invites_per_room: RateLimiter<RoomId>,
    invites_per_user: RateLimiter<UserId>,
    invites_per_issuer: RateLimiter<UserId>,
    invites_per_room_burst: u32,
}

/// A 429 for `wait`, counted against `limiter`.
fn exceeded(wait: RetryAfter, limiter: Limiter) -> ApiError {
    // At least a millisecond, so a client never reads "retry after 0".
    let ms = u64::try_from(wait.0.max(Duration::from_millis(1)).as_millis()).unwrap_or(u64::MAX);
    ApiError::limit_exceeded(ms, limiter)
}

/// The key of the per-account login limits: the user ID as named, lowercased (as the
/// reference keys them), whether or not such a user exists.
pub fn login_key(user: &str) -> String {
    user.to_lowercase()
}

impl Limits {
    /// The buckets for `rc`.
    pub fn new(rc: &RcLimits) -> Self {
        Self {
            login_address: RateLimiter::from_config(rc.login.address),
            login_account: RateLimiter::from_config(rc.login.account),
            login_failed: RateLimiter::from_config(rc.login.failed_attempts),
            registration: RateLimiter::from_config(rc.registration),
            joins_local: RateLimiter::from_config(rc.joins.local),
            joins_per_room: RateLimiter::from_config(rc.joins_per_room),
            room_creation: RateLimiter::from_config(rc.room_creation),
            message: RateLimiter::from_config(rc.message),
            invites_per_room: RateLimiter::from_config(rc.invites.per_room),
            invites_per_user: RateLimiter::from_config(rc.invites.per_user),
            invites_per_issuer: RateLimiter::from_config(rc.invites.per_issuer),
            invites_per_room_burst: rc.invites.per_room.burst_count,
        }
    }

    /// `rc_login.address`: takes a token for a login request from `client`.
    pub fn login_attempt(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        match client {
            Some(ip) => self
                .login_address
                .check(&ip, Instant::now())
                .map_err(|w| exceeded(w, Limiter::Login)),
            None => Ok(()),
        }
    }

    /// `rc_login.failed_attempts`: whether `user` may try a password now (counts nothing).
    pub fn login_may_try(&self, user: &str) -> Result<(), ApiError> {
        self.login_failed
            .peek(&login_key(user), Instant::now())
            .map_err(|w| exceeded(w, Limiter::Login))
    }

    /// `rc_login.failed_attempts`: counts a wrong password for `user` (never refuses: the
    /// answer stays the 403 of the failed login).
    pub fn login_failed(&self, user: &str) {
        let _ = self.login_failed.check(&login_key(user), Instant::now());
    }

    /// `rc_login.account`: takes a token for a successful login of `user`.
    pub fn login_succeeded(&self, user: &UserId) -> Result<(), ApiError> {
        self.login_account
            .check(&login_key(user.as_str()), Instant::now())
            .map_err(|w| exceeded(w, Limiter::Login))
    }

    /// `rc_registration`: whether `client` may register now (counts nothing).
    pub fn registration_may_start(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        match client {
            Some(ip) => self
                .registration
                .peek(&ip, Instant::now())
                .map_err(|w| exceeded(w, Limiter::Other("registration"))),
            None => Ok(()),
        }
    }

    /// `rc_registration`: takes a token as `client` creates an account.
    pub fn registration(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        match client {
            Some(ip) => self
                .registration
                .check(&ip, Instant::now())
                .map_err(|w| exceeded(w, Limiter::Other("registration"))),
            None => Ok(()),
        }
    }

    /// `rc_joins.local` for `user` (taken) and `rc_joins_per_room` for `room` (checked):
    /// before `user` joins a room they are not in.
    pub fn join(&self, user: &UserId, room: &RoomId) -> Result<(), ApiError> {
        let now = Instant::now();
        self.joins_local
            .check(user, now)
            .map_err(|w| exceeded(w, Limiter::Other("join")))?;
        self.joins_per_room
            .peek(room, now)
            .map_err(|w| exceeded(w, Limiter::Other("join_per_room")))
    }

    /// `rc_joins_per_room`: counts a join to `room` that happened (by anyone).
    pub fn joined(&self, room: &RoomId) {
        let _ = self.joins_per_room.check(room, Instant::now());
    }

    /// `rc_invites`: `issuer` invites `invitee` into `room`.
    pub fn invite(&self, issuer: &UserId, room: &RoomId, invitee: &UserId) -> Result<(), ApiError> {
        let now = Instant::now();
        self.invites_per_room
            .check(room, now)
            .map_err(|w| exceeded(w, Limiter::Other("invite")))?;
        self.invites_per_user
            .check(invitee, now)
            .map_err(|w| exceeded(w, Limiter::Other("invite")))?;
        self.invites_per_issuer
            .check(issuer, now)
            .map_err(|w| exceeded(w, Limiter::Other("invite")))
    }

    /// `rc_invites.per_room` for the `count` invites of a new room: the reference checks
    /// them as one action of `count` tokens in an empty bucket, so only more invites than
    /// the burst are refused, with its 400.
    pub fn invites_at_creation(&self, count: usize) -> Result<(), ApiError> {
        if count > self.invites_per_room_burst as usize {
            return Err(ApiError::unknown("Cannot invite so many users at once"));
        }
        Ok(())
    }

    /// `rc_room_creation` and `rc_message`: before `user` creates a room.
    pub fn create_room(&self, user: &UserId) -> Result<(), ApiError> {
        let now = Instant::now();
        self.room_creation
            .peek(user, now)
            .map_err(|w| exceeded(w, Limiter::Other("room_creation")))?;
        self.message(user)?;
        self.room_creation
            .check(user, now)
            .map_err(|w| exceeded(w, Limiter::Other("room_creation")))
    }

    /// `rc_message`: `user` sends an event.
    pub fn message(&self, user: &UserId) -> Result<(), ApiError> {
        self.message
            .check(user, Instant::now())
            .map_err(|w| exceeded(w, Limiter::Other("message")))
    }
}
