//! [`ModuleApi`]: what a router receives at construction to talk back to the server.

use std::sync::Arc;

use crate::{IdError, PresenceState, ServerName, UserId};
use tokio::sync::{mpsc, oneshot};

/// Why a module API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleApiError {
    /// This process does not write presence (or the server is shutting down).
    #[error("this process does not write presence, or the server is shutting down")]
    NotWriter,
    /// The request was rejected by the server.
    #[error("{0}")]
    Rejected(String),
}

/// A request from a module to the server, carried over a bounded channel to the process that
/// writes presence.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModuleCommand {
    /// See [`ModuleApi::send_local_online_presence_to`].
    SendLocalOnlinePresenceTo {
        /// The target users, local or remote.
        users: Vec<UserId>,
        /// Where the server answers.
        reply: oneshot::Sender<Result<(), ModuleApiError>>,
    },
    /// See [`ModuleApi::set_presence_for_users`].
    SetPresenceForUsers {
        /// Each user's new state and status message.
        states: Vec<ForcedPresence>,
        /// Where the server answers.
        reply: oneshot::Sender<Result<(), ModuleApiError>>,
    },
}

/// One entry of [`ModuleApi::set_presence_for_users`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedPresence {
    /// A local or remote user.
    pub user: UserId,
    /// The state to set.
    pub state: PresenceState,
    /// The status message to set (`None` clears it).
    pub status_msg: Option<Arc<str>>,
}

/// The server-side API handed to every router when it is built. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ModuleApi {
    server_name: ServerName,
    commands: Option<mpsc::Sender<ModuleCommand>>,
}

impl ModuleApi {
    /// An API whose commands go to the presence writer over `commands`.
    pub fn new(server_name: ServerName, commands: mpsc::Sender<ModuleCommand>) -> Self {
        Self {
            server_name,
            commands: Some(commands),
        }
    }

    /// An API that is not connected to a presence writer (for tools and tests): commands fail
    /// with [`ModuleApiError::NotWriter`].
    pub fn detached(server_name: ServerName) -> Self {
        Self {
            server_name,
            commands: None,
        }
    }

    /// This server's name.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Whether `user` lives on this server.
    pub fn is_mine(&self, user: &UserId) -> bool {
        user.is_on(&self.server_name)
    }

    /// `@localpart:<this server>`.
    pub fn get_qualified_user_id(&self, localpart: &str) -> Result<UserId, IdError> {
        UserId::from_parts(localpart, &self.server_name)
    }

    /// Sends the known non-offline presence that each target is interested in: local targets
    /// receive it in full on their next sync (users who went offline since their last sync
    /// are reported too, so nothing is hidden); remote targets are sent it over federation at
    /// once. Only the process that writes presence can do this.
    pub async fn send_local_online_presence_to(
        &self,
        users: impl IntoIterator<Item = UserId>,
    ) -> Result<(), ModuleApiError> {
        let tx = self.commands.as_ref().ok_or(ModuleApiError::NotWriter)?;
        let (reply, rx) = oneshot::channel();
        let users = users.into_iter().collect();
        tx.send(ModuleCommand::SendLocalOnlinePresenceTo { users, reply })
            .await
            .map_err(|_| ModuleApiError::NotWriter)?;
        rx.await.map_err(|_| ModuleApiError::NotWriter)?
    }

    /// Sets users' presence as the server itself would: local or remote, without a device,
    /// replacing state and status message, always announced to those who receive it. Only
    /// the process that writes presence can do this.
    pub async fn set_presence_for_users(
        &self,
        states: impl IntoIterator<Item = ForcedPresence>,
    ) -> Result<(), ModuleApiError> {
        let tx = self.commands.as_ref().ok_or(ModuleApiError::NotWriter)?;
        let (reply, rx) = oneshot::channel();
        let states = states.into_iter().collect();
        tx.send(ModuleCommand::SetPresenceForUsers { states, reply })
            .await
            .map_err(|_| ModuleApiError::NotWriter)?;
        rx.await.map_err(|_| ModuleApiError::NotWriter)?
    }
}
