//! The presence state machine (the reference's `synapse/handlers/presence.py`): per-device aggregation, `should_notify`, the
//! update rules and the timeout rules, as pure functions of their inputs and `now`.
//!
//! Where the reference schedules up to four append-only wheel-timer entries per update and
//! re-checks users on a 5 s cadence, Presenced computes each user's single next deadline
//! ([`next_check`]) from the same rules, so timeouts fire on time and each user has one timer.

use std::sync::Arc;

use presence_router::{DeviceId, Millis, PresenceState};

use crate::Timers;

/// A user's presence without the user ID (the engine keys it by interned index).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Record {
    /// The presence state.
    pub state: PresenceState,
    /// Whether the user is active now (meaningful when online).
    pub currently_active: bool,
    /// Last activity, ms since the epoch; 0 = never.
    pub last_active_ts: Millis,
    /// Last federation announcement (local) or last update received (remote).
    pub last_federation_update_ts: Millis,
    /// When a sync of this user last finished.
    pub last_user_sync_ts: Millis,
    /// Status message; never `Some("")`.
    pub status_msg: Option<Arc<str>>,
}

/// One device of a local user (reference `UserDevicePresenceState`), in memory only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `None` is the pseudo-device restored at startup or used by server-side changes.
    pub id: Option<DeviceId>,
    /// The device's own presence.
    pub state: PresenceState,
    /// Last activity on this device.
    pub last_active_ts: Millis,
    /// Last time a sync of this device started or ended.
    pub last_sync_ts: Millis,
    /// Syncs of this device in flight.
    pub syncing: u32,
    /// The pseudo-device restored at startup: it stands in for the devices the user had
    /// before the restart until one of the user's devices reports.
    pub restored: bool,
}

impl Device {
    /// A new, offline device.
    pub fn new(id: Option<DeviceId>) -> Self {
        Self {
            id,
            state: PresenceState::Offline,
            last_active_ts: 0,
            last_sync_ts: 0,
            syncing: 0,
            restored: false,
        }
    }
}

/// The devices of one local user.
pub type Devices = Vec<Device>;

/// Finds or creates the device `id`.
pub fn device_mut<'a>(devices: &'a mut Devices, id: Option<&DeviceId>) -> &'a mut Device {
    let pos = match devices.iter().position(|d| d.id.as_ref() == id) {
        Some(pos) => pos,
        None => {
            devices.push(Device::new(id.cloned()));
            devices.len() - 1
        }
    };
    &mut devices[pos]
}

/// The user's state from its devices: the highest priority wins (busy > online > unavailable >
/// offline); no devices is offline.
pub fn combine(devices: &[Device]) -> PresenceState {
    devices
        .iter()
        .map(|d| d.state)
        .max_by_key(|s| s.priority())
        .unwrap_or(PresenceState::Offline)
}

/// Whether a change from `old` to `new` is worth telling anyone about (the reference's
/// `should_notify`).
pub fn should_notify(old: &Record, new: &Record, granularity: Millis) -> bool {
    if old == new {
        return false;
    }
    if old.status_msg != new.status_msg || old.state != new.state {
        return true;
    }
    let active_gap = new.last_active_ts.saturating_sub(old.last_active_ts) > granularity;
    if old.state == PresenceState::Online {
        if new.currently_active != old.currently_active {
            return true;
        }
        active_gap && !new.currently_active
    } else {
        active_gap
    }
}

/// What [`handle_update`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The state to keep.
    pub record: Record,
    /// Persist it with a new stream position and tell its audience.
    pub notify: bool,
    /// Not worth notifying, but due to be announced again over federation.
    pub federation_ping: bool,
}

/// Applies the reference's `handle_update` rules to a new state, minus the timer scheduling,
/// which [`next_check`] derives from the result.
pub fn handle_update(
    prev: &Record,
    mut new: Record,
    is_local: bool,
    now: Millis,
    timers: &Timers,
) -> Update {
    let mut federation_ping = false;
    if is_local {
        if new.state == PresenceState::Online {
            new.currently_active =
                now.saturating_sub(new.last_active_ts) < timers.last_active_granularity;
        }
        if new.state != PresenceState::Offline
            && now.saturating_sub(new.last_federation_update_ts) > timers.federation_ping_interval
        {
            new.last_federation_update_ts = now;
            federation_ping = true;
        }
    }
    let notify = should_notify(prev, &new, timers.last_active_granularity);
    if notify {
        new.last_federation_update_ts = now;
    }
    Update {
        record: new,
        notify,
        federation_ping,
    }
}

/// The timeout rules (the reference's `handle_timeout`): what the state becomes at `now` if nothing else
/// happens, or `None` if there is nothing to re-evaluate. Devices that time out are removed.
pub fn handle_timeout(
    record: &Record,
    devices: Option<&mut Devices>,
    is_local: bool,
    now: Millis,
    timers: &Timers,
) -> Option<Record> {
    if record.state == PresenceState::Offline {
        return None;
    }
    let mut changed = false;
    let mut out = record.clone();
    if is_local {
        if let Some(devices) = devices {
            let mut devices_changed = false;
            for d in devices.iter_mut() {
                if d.state == PresenceState::Online
                    && now.saturating_sub(d.last_active_ts) > timers.idle_timeout
                {
                    d.state = PresenceState::Unavailable;
                    devices_changed = true;
                }
            }
            let before = devices.len();
            devices.retain(|d| d.syncing > 0 || !device_expired(d, now, timers));
            devices_changed |= devices.len() != before;
            if devices_changed {
                out.state = combine(devices);
                changed = true;
            }
        }
        if now.saturating_sub(out.last_active_ts) > timers.last_active_granularity {
            changed = true;
        }
        if now.saturating_sub(out.last_federation_update_ts) > timers.federation_ping_interval {
            changed = true;
        }
    } else if now.saturating_sub(out.last_federation_update_ts) > timers.federation_timeout {
        out.state = PresenceState::Offline;
        changed = true;
    }
    changed.then_some(out)
}

fn device_expired(d: &Device, now: Millis, timers: &Timers) -> bool {
    let limit = if d.state == PresenceState::Busy {
        timers.busy_timeout
    } else {
        timers.sync_online_timeout
    };
    now.saturating_sub(d.last_sync_ts.max(d.last_active_ts)) > limit
}

/// The earliest time after `now` at which [`handle_timeout`] could return something for this
/// user, or `None` if no timer is needed.
pub fn next_check(
    record: &Record,
    devices: Option<&Devices>,
    is_local: bool,
    now: Millis,
    timers: &Timers,
) -> Option<Millis> {
    if record.state == PresenceState::Offline {
        return None;
    }
    let mut next: Option<Millis> = None;
    let mut consider = |deadline: Millis| {
        // "Strictly after" the limit, as the reference compares with `>`.
        let at = deadline.saturating_add(1);
        if at > now {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    };
    if is_local {
        for d in devices.into_iter().flatten() {
            if d.state == PresenceState::Online {
                consider(d.last_active_ts.saturating_add(timers.idle_timeout));
            }
            if d.syncing == 0 {
                let limit = if d.state == PresenceState::Busy {
                    timers.busy_timeout
                } else {
                    timers.sync_online_timeout
                };
                consider(d.last_sync_ts.max(d.last_active_ts).saturating_add(limit));
            }
        }
        if record.currently_active {
            consider(
                record
                    .last_active_ts
                    .saturating_add(timers.last_active_granularity),
            );
        }
        consider(
            record
                .last_federation_update_ts
                .saturating_add(timers.federation_ping_interval),
        );
    } else {
        consider(
            record
                .last_federation_update_ts
                .saturating_add(timers.federation_timeout),
        );
    }
    next
}

#[cfg(test)]
mod tests;
