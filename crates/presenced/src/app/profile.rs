//! Profiles: what `GET /profile/{userId}` answers. A local user's profile is the display
//! name recorded at registration (Presenced has no avatars and no profile changes); other
//! servers' users are not looked up, since Presenced does not federate profiles.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#profiles>.

use presence_router::UserId;
use presence_store::PresenceStore;

use crate::{
    app::{App, rooms::displayname},
    error::ApiError,
};

/// A user's profile fields (absent ones are left out of responses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The display name, if the user has one.
    pub displayname: Option<String>,
}

/// The profile of `user`, or 404 `M_NOT_FOUND` (the reference's "Profile was not found")
/// for a user this server does not have.
pub async fn profile(state: &App, user: &UserId) -> Result<Profile, ApiError> {
    let not_found = || ApiError::not_found("Profile was not found");
    if !user.is_on(&state.config().server_name) || !state.store()?.user_exists(user).await? {
        return Err(not_found());
    }
    let displayname = displayname(state, user).await?;
    Ok(Profile { displayname })
}
