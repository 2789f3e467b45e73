//! The presence service's background tasks: timers, the lazy flush, and module commands.

use std::time::Duration;

use super::PresencePersistence;
use presence_router::ModuleCommand;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{PresenceService, now_ms};

/// Spawns the timer loop, the periodic flush of sync bookkeeping and the module command loop.
/// They stop when `shutdown` is cancelled (the flush runs once more on the way out).
pub fn spawn_background<S: PresencePersistence>(
    svc: &PresenceService<S>,
    commands: mpsc::Receiver<ModuleCommand>,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(timers(svc.clone(), shutdown.clone()));
    tasks.spawn(flush(svc.clone(), shutdown.clone()));
    tasks.spawn(module_commands(svc.clone(), commands, shutdown));
}

/// Sleeps until the next deadline (at most a second, so deadlines set meanwhile are met within
/// a second) and runs what is due.
async fn timers<S: PresencePersistence>(svc: PresenceService<S>, shutdown: CancellationToken) {
    loop {
        let wait = svc
            .next_deadline()
            .map_or(1000, |at| at.saturating_sub(now_ms()))
            .clamp(5, 1000);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        if let Err(e) = svc.tick().await {
            tracing::warn!(error = %e, "Presence timeouts could not be persisted; retrying.");
        }
    }
}

async fn flush<S: PresencePersistence>(svc: PresenceService<S>, shutdown: CancellationToken) {
    let every = svc.inner.flush_interval;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = svc.flush_dirty().await {
            tracing::warn!(error = %e, "Presence bookkeeping flush failed; retrying later.");
        }
    }
    if let Err(e) = svc.flush_dirty().await {
        tracing::warn!(error = %e, "Final presence bookkeeping flush failed.");
    }
}

async fn module_commands<S: PresencePersistence>(
    svc: PresenceService<S>,
    mut commands: mpsc::Receiver<ModuleCommand>,
    shutdown: CancellationToken,
) {
    loop {
        let cmd = tokio::select! {
            () = shutdown.cancelled() => return,
            cmd = commands.recv() => cmd,
        };
        match cmd {
            Some(ModuleCommand::SendLocalOnlinePresenceTo { users, reply }) => {
                let n = users.len();
                let result = svc.send_local_online_presence_to(users).await;
                if let Err(e) = &result {
                    tracing::warn!(targets = n, error = %e, "send_local_online_presence_to failed.");
                }
                let _ = reply.send(result);
            }
            Some(ModuleCommand::SetPresenceForUsers { states, reply }) => {
                let n = states.len();
                let result = svc.set_presence_for_users(states).await;
                if let Err(e) = &result {
                    tracing::warn!(users = n, error = %e, "set_presence_for_users failed.");
                }
                let _ = reply.send(result);
            }
            Some(_) => tracing::warn!("Ignoring a module command this version does not handle."),
            None => return,
        }
    }
}
