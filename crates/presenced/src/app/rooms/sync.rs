//! The `rooms` section of `/sync`, and the rooms part of sync tokens.
//!
//! The rooms position is the store's event stream ordering (one sequence for all rooms).
//! A sync reads the current position `P` first and shows only events at or below it, so an
//! event written while the sync runs is never lost between two tokens: it lands above `P`
//! and comes with the next sync. Every write that adds events wakes the users who see them
//! (the room's joined members, plus whoever was invited or left), so a long-polling sync
//! returns as soon as there is news.
//!
//! Detecting news cheaply: [`rooms_section`] with `since = Some(P)` where `P` is still the
//! current position returns at once after one read (nothing can be new); otherwise it reads
//! the user's rooms with their latest positions in one query and loads events only for the
//! rooms that moved. [`has_news`] tells whether a section holds anything.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#get_matrixclientv3sync>.

use std::collections::BTreeSet;

use presence_router::{RoomId, UserId};
use presence_store::{Membership, OrderedEvent, PresenceStore, StreamOrdering, UserRoom};
use serde_json::{Map, Value, json};

use super::events::{self, MEMBER, client_event, invite_state};
use crate::{
    app::{App, sync::RoomFilter},
    error::ApiError,
    presence::now_ms,
};

/// How many timeline events a room shows at most per sync.
pub const TIMELINE_LIMIT: usize = 20;
/// How many other members are named as a room's heroes.
const MAX_HEROES: usize = 5;
/// Events read per page when looking for a user's membership before a leave.
const LEAVE_LOOKBACK_PAGE: usize = 100;
/// How many pages that look-back reads at most.
const LEAVE_LOOKBACK_PAGES: usize = 10;

/// The current rooms stream position: the latest stored event's stream ordering.
pub async fn rooms_stream_position(state: &App) -> Result<u64, ApiError> {
    Ok(state.store()?.max_stream_ordering().await?)
}

/// An empty `rooms` object.
fn empty_rooms() -> Value {
    json!({"join": {}, "invite": {}, "leave": {}})
}

/// Whether a `rooms` section from [`rooms_section`] holds anything for the client.
pub fn has_news(rooms: &Value) -> bool {
    ["join", "invite", "leave"]
        .iter()
        .any(|k| rooms[k].as_object().is_some_and(|m| !m.is_empty()))
}

/// The `rooms` section of a sync of `user` and the rooms position of the next token.
///
/// - Initial sync (`since = None`): every joined room with its current state and latest
///   [`TIMELINE_LIMIT`] events, and every pending invite.
/// - Incremental: only rooms with events after `since`, with those events (the latest
///   [`TIMELINE_LIMIT`]; `limited: true` when there were more, and then the current state
///   too), rooms joined since then with their whole state, new invites, and rooms left
///   since then with the events up to the leave.
/// - `full_state`: every joined room with its whole state, whatever `since` is.
pub async fn rooms_section(
    state: &App,
    user: &UserId,
    since: Option<u64>,
    full_state: bool,
) -> Result<(Value, u64), ApiError> {
    filtered_rooms_section(state, user, since, full_state, &RoomFilter::default()).await
}

/// [`rooms_section`] showing only the rooms `filter` keeps (its `room.rooms` / `not_rooms`).
pub(crate) async fn filtered_rooms_section(
    state: &App,
    user: &UserId,
    since: Option<u64>,
    full_state: bool,
    filter: &RoomFilter,
) -> Result<(Value, u64), ApiError> {
    let pos = rooms_stream_position(state).await?;
    // A token from the future (another database, a forged token) counts as "now".
    let since = since.map(|s| s.min(pos));
    if since == Some(pos) && !full_state {
        return Ok((empty_rooms(), pos));
    }
    let now = now_ms();
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    for room in state.store()?.user_rooms(user).await? {
        // The filter's `room.rooms` / `not_rooms` apply before anything else is read.
        if !filter.keeps(room.room_id.as_str()) {
            continue;
        }
        let after = |o: Option<StreamOrdering>| match since {
            None => true,
            Some(s) => o.is_some_and(|o| o > s && o <= pos),
        };
        match room.membership {
            Membership::Join => {
                if let Some(section) =
                    joined_room(state, user, &room, since, pos, full_state, now).await?
                {
                    join.insert(room.room_id.as_str().to_owned(), section);
                }
            }
            Membership::Invite if after(room.membership_ordering) => {
                let room_state = state_at(state, &room.room_id, pos).await?;
                invite.insert(
                    room.room_id.as_str().to_owned(),
                    json!({"invite_state": {"events": invite_state(&room_state, user)}}),
                );
            }
            // Left rooms appear once, in the sync that follows the leave.
            Membership::Leave if since.is_some() && after(room.membership_ordering) => {
                let up_to = room.membership_ordering.unwrap_or(pos);
                let (mut timeline, mut limited) =
                    timeline(state, &room.room_id, since, up_to).await?;
                // Someone who turns down an invite never saw the room: they get their own
                // membership events only, not the messages of a room they were not in.
                if !was_joined_before(state, &room.room_id, user, up_to).await? {
                    timeline.retain(|e| {
                        e.event.event_type == MEMBER
                            && e.event.state_key.as_deref() == Some(user.as_str())
                    });
                    limited = false;
                }
                leave.insert(
                    room.room_id.as_str().to_owned(),
                    json!({
                        "timeline": timeline_json(&timeline, limited, now),
                        "state": {"events": []},
                        "account_data": {"events": []},
                    }),
                );
            }
            _ => {}
        }
    }
    let rooms = json!({"join": join, "invite": invite, "leave": leave});
    Ok((rooms, pos))
}

/// Whether `user`'s membership event before the one at `leave` made them joined. Looks back
/// page by page, a bounded number of events; not finding it counts as "not joined", the
/// answer that shows less.
async fn was_joined_before(
    state: &App,
    room: &RoomId,
    user: &UserId,
    leave: StreamOrdering,
) -> Result<bool, ApiError> {
    let mut before = leave.saturating_sub(1);
    for _ in 0..LEAVE_LOOKBACK_PAGES {
        let page = state
            .store()?
            .recent_events(room, before, LEAVE_LOOKBACK_PAGE)
            .await?;
        if let Some(own) = page.iter().rev().find(|e| {
            e.event.event_type == MEMBER && e.event.state_key.as_deref() == Some(user.as_str())
        }) {
            return Ok(events::content(&own.event)["membership"] == "join");
        }
        match page.first() {
            Some(first) if page.len() == LEAVE_LOOKBACK_PAGE && first.stream_ordering > 1 => {
                before = first.stream_ordering - 1;
            }
            _ => break,
        }
    }
    Ok(false)
}

/// The latest events of a room up to `up_to`, after `since`: (events, limited).
async fn timeline(
    state: &App,
    room: &RoomId,
    since: Option<u64>,
    up_to: StreamOrdering,
) -> Result<(Vec<OrderedEvent>, bool), ApiError> {
    let mut events = state
        .store()?
        .recent_events(room, up_to, TIMELINE_LIMIT + 1)
        .await?;
    if let Some(s) = since {
        events.retain(|e| e.stream_ordering > s);
    }
    let limited = events.len() > TIMELINE_LIMIT;
    if limited {
        events.remove(0);
    }
    Ok((events, limited))
}

fn timeline_json(events: &[OrderedEvent], limited: bool, now: u64) -> Value {
    // The position just before the first event: where a backwards pagination would start.
    let prev = events
        .first()
        .map_or(0, |e| e.stream_ordering.saturating_sub(1));
    json!({
        "events": events.iter().map(|e| client_event(e, now)).collect::<Vec<_>>(),
        "limited": limited,
        "prev_batch": format!("t{prev}"),
    })
}

/// The room's current state as of `pos` (state events written after `pos` come later, in
/// the timeline of the next sync).
async fn state_at(
    state: &App,
    room: &RoomId,
    pos: StreamOrdering,
) -> Result<Vec<OrderedEvent>, ApiError> {
    let mut room_state = state.store()?.room_state(room).await?;
    room_state.retain(|e| e.stream_ordering <= pos);
    Ok(room_state)
}

/// One joined room's section, or `None` when an incremental sync has nothing for it.
async fn joined_room(
    state: &App,
    user: &UserId,
    room: &UserRoom,
    since: Option<u64>,
    pos: StreamOrdering,
    full_state: bool,
    now: u64,
) -> Result<Option<Value>, ApiError> {
    let newly_joined = match since {
        None => true,
        Some(s) => room.membership_ordering.is_some_and(|o| o > s && o <= pos),
    };
    let moved = since.is_none_or(|s| room.latest_ordering > s);
    if !moved && !full_state {
        return Ok(None);
    }
    let (timeline, limited) = timeline(state, &room.room_id, since, pos).await?;
    if since.is_some() && timeline.is_empty() && !full_state && !newly_joined {
        return Ok(None);
    }
    // The state before the timeline: the current state without what the timeline holds.
    // Sent whenever the client may lack it: initial sync, a new join, a gap, full_state.
    let state_events: Vec<Value> = if since.is_none() || newly_joined || limited || full_state {
        let in_timeline: BTreeSet<&str> =
            timeline.iter().map(|e| e.event.event_id.as_str()).collect();
        state_at(state, &room.room_id, pos)
            .await?
            .iter()
            .filter(|e| !in_timeline.contains(e.event.event_id.as_str()))
            .map(|e| client_event(e, now))
            .collect()
    } else {
        Vec::new()
    };
    let summary = summary(state, user, &room.room_id).await?;
    Ok(Some(json!({
        "timeline": timeline_json(&timeline, limited, now),
        "state": {"events": state_events},
        "ephemeral": {"events": []},
        "account_data": {"events": []},
        "summary": summary,
        "unread_notifications": {"highlight_count": 0, "notification_count": 0},
    })))
}

/// The room summary: member counts and a few other members to name the room after.
async fn summary(state: &App, user: &UserId, room: &RoomId) -> Result<Value, ApiError> {
    let members = state.store()?.room_members(room).await?;
    let joined = members
        .iter()
        .filter(|(_, m)| *m == Membership::Join)
        .count();
    let invited = members
        .iter()
        .filter(|(_, m)| *m == Membership::Invite)
        .count();
    let heroes: Vec<&str> = members
        .iter()
        .filter(|(u, m)| u != user && matches!(m, Membership::Join | Membership::Invite))
        .take(MAX_HEROES)
        .map(|(u, _)| u.as_str())
        .collect();
    Ok(json!({
        "m.heroes": heroes,
        "m.joined_member_count": joined,
        "m.invited_member_count": invited,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_is_any_room_entry() {
        assert!(!has_news(&empty_rooms()));
        assert!(has_news(
            &json!({"join": {"!r:x": {}}, "invite": {}, "leave": {}})
        ));
        assert!(has_news(
            &json!({"join": {}, "invite": {}, "leave": {"!r:x": {}}})
        ));
    }
}
