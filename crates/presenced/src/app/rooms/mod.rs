//! Rooms on this server: creation with presets, memberships (join, invite, leave, and the
//! admin API's direct changes), messages, and the `/sync` rooms section ([`sync`]).
//!
//! Rooms matter to Presenced because their joined members share presence, so every
//! membership is stored as an `m.room.member` event together with the membership row in one
//! atomic store write, then the presence engine is told (`join` / `leave`; an invite is not
//! a membership) and the affected users' waiting syncs are woken. Membership changes of one
//! room are serialized ([`RoomLocks`]) so the store and the engine always agree on who is
//! in a room. Rooms are local only: room federation is out of scope.
//! Spec: <https://spec.matrix.org/v1.15/client-server-api/#rooms>.

pub mod events;
pub mod sync;

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{BuildHasher, RandomState},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use presence_router::{DeviceId, RoomId, ServerName, UserId};
use presence_store::{
    Membership, MembershipChange, OrderedEvent, PresenceStore, RoomRecord, RoomUpdate, StoreError,
    StoredEvent,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use self::events::{
    CANONICAL_ALIAS, CREATE, GUEST_ACCESS, HISTORY_VISIBILITY, JOIN_RULES, MEMBER, NAME,
    POWER_LEVELS, TOPIC, find_state, member_event, state_event,
};
use crate::{
    app::{
        App,
        accounts::{SERVER_USER_LOCALPART, new_room_id_localpart},
    },
    error::ApiError,
    presence::now_ms,
};

/// How many locks membership changes are spread over (rooms hash onto them).
const LOCK_STRIPES: usize = 64;
/// The room version of new rooms.
pub const DEFAULT_ROOM_VERSION: &str = "10";
/// Room versions a client may ask for. Presenced never federates rooms, so the version
/// only labels the room for clients.
pub const ROOM_VERSIONS: [&str; 11] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"];
/// The longest room alias, in bytes.
const MAX_ALIAS_LEN: usize = 255;
/// Where a user's display name is kept in the store's key/value table.
const DISPLAYNAME_META_PREFIX: &str = "profile.displayname:";

/// Serializes membership changes per room: a room's changes go through one lock (rooms
/// share a fixed set of locks), so two requests never interleave their checks and writes.
pub struct RoomLocks {
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
}

impl Default for RoomLocks {
    fn default() -> Self {
        Self {
            stripes: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
        }
    }
}

impl RoomLocks {
    /// Waits for the lock of `room`.
    pub async fn lock(&self, room: &RoomId) -> tokio::sync::MutexGuard<'_, ()> {
        let at = (self.hasher.hash_one(room) % LOCK_STRIPES as u64) as usize;
        // `at` is below the number of stripes by construction.
        self.stripes[at % self.stripes.len()].lock().await
    }
}

/// A room alias, `#localpart:server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAlias(String);

impl RoomAlias {
    /// Parses an alias (400 `M_INVALID_PARAM` when malformed).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid_param(format!("{s:?} is not a valid room alias"));
        let rest = s.strip_prefix('#').ok_or_else(bad)?;
        let (local, server) = rest.split_once(':').ok_or_else(bad)?;
        if s.len() > MAX_ALIAS_LEN
            || local.is_empty()
            || local.chars().any(|c| c.is_whitespace() || c.is_control())
            || ServerName::parse(server).is_err()
        {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }

    /// The alias `#localpart:server` of a new room (400 `M_INVALID_PARAM` when the
    /// localpart holds characters an alias cannot).
    pub fn local(localpart: &str, server: &ServerName) -> Result<Self, ApiError> {
        if localpart.is_empty()
            || localpart
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::invalid_param("Invalid characters in room alias"));
        }
        Self::parse(&format!("#{localpart}:{}", server.as_str()))
    }

    /// The alias as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `createRoom` preset: who may join and what the defaults are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Anyone may join.
    PublicChat,
    /// Invite only.
    PrivateChat,
    /// Invite only, and invitees get the creator's power level.
    TrustedPrivateChat,
}

impl Preset {
    /// Parses a preset name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public_chat" => Self::PublicChat,
            "private_chat" => Self::PrivateChat,
            "trusted_private_chat" => Self::TrustedPrivateChat,
            _ => return None,
        })
    }

    fn join_rule(self) -> &'static str {
        match self {
            Self::PublicChat => "public",
            Self::PrivateChat | Self::TrustedPrivateChat => "invite",
        }
    }
}

/// One state event a client asks `createRoom` to add.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialState {
    /// Its type.
    pub event_type: String,
    /// Its state key.
    pub state_key: String,
    /// Its content.
    pub content: Map<String, Value>,
}

/// What `createRoom` asked for, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRoom {
    /// The preset.
    pub preset: Preset,
    /// Listed in the room directory.
    pub public: bool,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// The local alias to create.
    pub alias: Option<RoomAlias>,
    /// Users to invite.
    pub invite: Vec<UserId>,
    /// Marks the invites as direct chats.
    pub is_direct: bool,
    /// The room version.
    pub room_version: String,
    /// Extra `m.room.create` content.
    pub creation_content: Map<String, Value>,
    /// Extra state events.
    pub initial_state: Vec<InitialState>,
    /// Power level keys replacing the defaults.
    pub power_level_override: Map<String, Value>,
}

impl NewRoom {
    /// A room with `preset` and nothing else.
    pub fn new(preset: Preset) -> Self {
        Self {
            preset,
            public: false,
            name: None,
            topic: None,
            alias: None,
            invite: Vec::new(),
            is_direct: false,
            room_version: DEFAULT_ROOM_VERSION.to_owned(),
            creation_content: Map::new(),
            initial_state: Vec::new(),
            power_level_override: Map::new(),
        }
    }

    /// Checks the room version.
    pub fn check_version(version: &str) -> Result<(), ApiError> {
        if ROOM_VERSIONS.contains(&version) {
            Ok(())
        } else {
            Err(ApiError::unsupported_room_version(format!(
                "Your homeserver does not support room version {version:?}"
            )))
        }
    }
}

/// The server's own user, which creates the rooms the admin API makes.
pub fn server_user(server: &ServerName) -> Result<UserId, ApiError> {
    UserId::from_parts(SERVER_USER_LOCALPART, server).map_err(ApiError::internal)
}

/// Records a user's display name (used in the member events of their joins).
pub async fn set_displayname(state: &App, user: &UserId, name: &str) -> Result<(), ApiError> {
    let key = format!("{DISPLAYNAME_META_PREFIX}{user}");
    state.store()?.set_meta(&key, name).await?;
    Ok(())
}

/// A user's recorded display name, if any.
pub async fn displayname(state: &App, user: &UserId) -> Result<Option<String>, ApiError> {
    let key = format!("{DISPLAYNAME_META_PREFIX}{user}");
    Ok(state.store()?.get_meta(&key).await?)
}

/// The room a `roomIdOrAlias` path segment names: 400 `M_INVALID_PARAM` when it is neither,
/// 404 `M_NOT_FOUND` for an unknown alias.
pub async fn resolve(state: &App, id_or_alias: &str) -> Result<RoomId, ApiError> {
    if id_or_alias.starts_with('#') {
        let alias = RoomAlias::parse(id_or_alias)?;
        return state
            .store()?
            .resolve_room_alias(alias.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found("Room alias not found"));
    }
    parse_room_id(id_or_alias)
}

/// Parses a room ID from a path (400 `M_INVALID_PARAM`).
pub fn parse_room_id(s: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(s).map_err(|_| ApiError::invalid_param(format!("{s:?} is not a valid room ID")))
}

/// 404 `M_NOT_FOUND` unless the room exists.
async fn existing_room(state: &App, room: &RoomId) -> Result<(), ApiError> {
    match state.store()?.get_room(room).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("Unknown room")),
    }
}

async fn membership(
    state: &App,
    room: &RoomId,
    user: &UserId,
) -> Result<Option<Membership>, ApiError> {
    Ok(state.store()?.membership(room, user).await?)
}

/// The joined members of a room.
pub async fn joined_members_of(state: &App, room: &RoomId) -> Result<Vec<UserId>, ApiError> {
    Ok(state
        .store()?
        .room_members(room)
        .await?
        .into_iter()
        .filter(|(_, m)| *m == Membership::Join)
        .map(|(u, _)| u)
        .collect())
}

/// Wakes the syncs of the room's joined members and of `also` (who just changed membership
/// and may no longer be joined), so they return the new events at once.
async fn wake_room(state: &App, room: &RoomId, also: &[UserId]) -> Result<(), ApiError> {
    let mut users: BTreeSet<UserId> = joined_members_of(state, room).await?.into_iter().collect();
    users.extend(also.iter().cloned());
    state.presence().notifier().wake(users.iter());
    Ok(())
}

/// Stores events and membership changes atomically, then tells presence and wakes syncs.
async fn commit(
    state: &App,
    room: &RoomId,
    events: Vec<StoredEvent>,
    changes: Vec<MembershipChange>,
) -> Result<(), ApiError> {
    let touched: Vec<(UserId, Membership)> = changes
        .iter()
        .map(|c| (c.user_id.clone(), c.membership))
        .collect();
    state
        .store()?
        .apply_room_update(room, RoomUpdate::new(events, changes))
        .await?;
    for (user, m) in &touched {
        match m {
            Membership::Join => state.presence().join(room, user).await?,
            Membership::Leave => state.presence().leave(room, user),
            // Only joined members share presence.
            _ => {}
        }
    }
    let users: Vec<UserId> = touched.into_iter().map(|(u, _)| u).collect();
    wake_room(state, room, &users).await
}

/// The default power levels of a new room, with `users` at 100 and the client's overrides.
fn power_levels(users: &[&UserId], overrides: &Map<String, Value>) -> Value {
    let admins: Map<String, Value> = users
        .iter()
        .map(|u| (u.as_str().to_owned(), json!(100)))
        .collect();
    let mut content = json!({
        "users": admins,
        "users_default": 0,
        "events": {
            NAME: 50,
            POWER_LEVELS: 100,
            HISTORY_VISIBILITY: 100,
            CANONICAL_ALIAS: 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        // Any member may invite: the invite endpoint checks membership only.
        "invite": 0,
    });
    if let Some(obj) = content.as_object_mut() {
        for (k, v) in overrides {
            obj.insert(k.clone(), v.clone());
        }
    }
    content
}

/// A join's member event content, with the user's display name when known.
async fn join_content(state: &App, user: &UserId) -> Result<Value, ApiError> {
    let mut content = json!({"membership": "join"});
    if let Some(name) = displayname(state, user).await? {
        content["displayname"] = json!(name);
    }
    Ok(content)
}

/// Checks that each invitee can be invited: a local, existing user.
async fn check_invitee(state: &App, invitee: &UserId) -> Result<(), ApiError> {
    if !invitee.is_on(&state.config().server_name) {
        return Err(ApiError::forbidden(
            "Cannot invite users of other servers: rooms are not federated",
        ));
    }
    if !state.store()?.user_exists(invitee).await? {
        return Err(ApiError::not_found(format!("Unknown user {invitee}")));
    }
    Ok(())
}

/// `POST /createRoom`: creates the room with the creator joined and the invites sent.
pub async fn create_room(state: &App, creator: &UserId, new: NewRoom) -> Result<RoomId, ApiError> {
    state.limits().create_room(creator)?;
    NewRoom::check_version(&new.room_version)?;
    state.limits().invites_at_creation(new.invite.len())?;
    let server = state.config().server_name.clone();
    let mut invitees: Vec<UserId> = Vec::new();
    for u in &new.invite {
        if u != creator && !invitees.contains(u) {
            check_invitee(state, u).await?;
            invitees.push(u.clone());
        }
    }
    if let Some(alias) = &new.alias
        && state
            .store()?
            .resolve_room_alias(alias.as_str())
            .await?
            .is_some()
    {
        return Err(ApiError::room_in_use("Room alias already taken"));
    }
    let ts = now_ms();
    let room = RoomId::parse(&format!(
        "!{}:{}",
        new_room_id_localpart()?,
        server.as_str()
    ))
    .map_err(ApiError::internal)?;
    state
        .store()?
        .create_room(RoomRecord::new(
            room.clone(),
            creator.clone(),
            new.public,
            ts,
        ))
        .await?;
    if let Some(alias) = &new.alias
        && !state
            .store()?
            .create_room_alias(alias.as_str(), &room, creator, ts)
            .await?
    {
        // Lost a race for the alias; the room stays empty and unused.
        return Err(ApiError::room_in_use("Room alias already taken"));
    }

    let mut create = new.creation_content.clone();
    create.insert("creator".into(), json!(creator.as_str()));
    create.insert("room_version".into(), json!(new.room_version));
    let mut admins = vec![creator];
    if new.preset == Preset::TrustedPrivateChat {
        admins.extend(invitees.iter());
    }
    let mut evs = vec![
        state_event(CREATE, "", creator, ts, Value::Object(create))?,
        member_event(creator, creator, ts, join_content(state, creator).await?)?,
        state_event(
            POWER_LEVELS,
            "",
            creator,
            ts,
            power_levels(&admins, &new.power_level_override),
        )?,
    ];
    if let Some(alias) = &new.alias {
        evs.push(state_event(
            CANONICAL_ALIAS,
            "",
            creator,
            ts,
            json!({"alias": alias.as_str()}),
        )?);
    }
    evs.push(state_event(
        JOIN_RULES,
        "",
        creator,
        ts,
        json!({"join_rule": new.preset.join_rule()}),
    )?);
    evs.push(state_event(
        HISTORY_VISIBILITY,
        "",
        creator,
        ts,
        json!({"history_visibility": "shared"}),
    )?);
    if new.preset != Preset::PublicChat {
        evs.push(state_event(
            GUEST_ACCESS,
            "",
            creator,
            ts,
            json!({"guest_access": "can_join"}),
        )?);
    }
    for s in &new.initial_state {
        evs.push(state_event(
            &s.event_type,
            &s.state_key,
            creator,
            ts,
            Value::Object(s.content.clone()),
        )?);
    }
    if let Some(name) = &new.name {
        evs.push(state_event(NAME, "", creator, ts, json!({"name": name}))?);
    }
    if let Some(topic) = &new.topic {
        evs.push(state_event(
            TOPIC,
            "",
            creator,
            ts,
            json!({"topic": topic}),
        )?);
    }
    let mut changes = vec![
        MembershipChange::new(creator.clone(), Membership::Join, ts)
            .with_event_id(evs[1].event_id.clone()),
    ];
    for invitee in &invitees {
        let mut content = json!({"membership": "invite"});
        if new.is_direct {
            content["is_direct"] = json!(true);
        }
        if let Some(name) = displayname(state, invitee).await? {
            content["displayname"] = json!(name);
        }
        let ev = member_event(invitee, creator, ts, content)?;
        changes.push(
            MembershipChange::new(invitee.clone(), Membership::Invite, ts)
                .with_event_id(ev.event_id.clone()),
        );
        evs.push(ev);
    }
    let _guard = state.room_locks().lock(&room).await;
    commit(state, &room, evs, changes).await?;
    // The creator's join counts towards the room's joins, as any join does.
    state.limits().joined(&room);
    tracing::info!(room = %room, creator = %creator, "Created a room.");
    Ok(room)
}

/// The room's current join rule (`invite` when unset, the safe default).
fn join_rule(state_events: &[OrderedEvent]) -> String {
    find_state(state_events, JOIN_RULES, "")
        .and_then(|e| {
            events::content(&e.event)["join_rule"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "invite".to_owned())
}

/// `POST /join/{roomIdOrAlias}` and `/rooms/{roomId}/join`: joins a public room, or a room
/// the user is invited to. Joining again is a no-op.
pub async fn join(state: &App, user: &UserId, room: &RoomId) -> Result<(), ApiError> {
    existing_room(state, room).await?;
    let _guard = state.room_locks().lock(room).await;
    let current = membership(state, room, user).await?;
    if current == Some(Membership::Join) {
        // Make sure presence agrees (harmless when it already does).
        state.presence().join(room, user).await?;
        return Ok(());
    }
    // Counted before the join is allowed, as the reference does: a refused join still
    // spends a token. A join to a room the user is already in is not limited.
    state.limits().join(user, room)?;
    state.limits().message(user)?;
    let room_state = state.store()?.room_state(room).await?;
    if join_rule(&room_state) != "public" && current != Some(Membership::Invite) {
        return Err(ApiError::forbidden("You are not invited to this room."));
    }
    let ts = now_ms();
    let ev = member_event(user, user, ts, join_content(state, user).await?)?;
    let change = MembershipChange::new(user.clone(), Membership::Join, ts)
        .with_event_id(ev.event_id.clone());
    commit(state, room, vec![ev], vec![change]).await?;
    state.limits().joined(room);
    Ok(())
}

/// `POST /rooms/{roomId}/invite`: a joined member invites a local user.
pub async fn invite(
    state: &App,
    inviter: &UserId,
    room: &RoomId,
    invitee: &UserId,
) -> Result<(), ApiError> {
    existing_room(state, room).await?;
    state.limits().invite(inviter, room, invitee)?;
    state.limits().message(inviter)?;
    let _guard = state.room_locks().lock(room).await;
    if membership(state, room, inviter).await? != Some(Membership::Join) {
        return Err(ApiError::forbidden(format!(
            "{inviter} is not in room {room}"
        )));
    }
    check_invitee(state, invitee).await?;
    match membership(state, room, invitee).await? {
        Some(Membership::Join) => {
            return Err(ApiError::forbidden(format!(
                "{invitee} is already in the room."
            )));
        }
        // Inviting again changes nothing.
        Some(Membership::Invite) => return Ok(()),
        _ => {}
    }
    let ts = now_ms();
    let mut content = json!({"membership": "invite"});
    if let Some(name) = displayname(state, invitee).await? {
        content["displayname"] = json!(name);
    }
    let ev = member_event(invitee, inviter, ts, content)?;
    let change = MembershipChange::new(invitee.clone(), Membership::Invite, ts)
        .with_event_id(ev.event_id.clone());
    commit(state, room, vec![ev], vec![change]).await
}

/// `POST /rooms/{roomId}/leave`: leaves a room, or turns down an invite.
pub async fn leave(state: &App, user: &UserId, room: &RoomId) -> Result<(), ApiError> {
    existing_room(state, room).await?;
    state.limits().message(user)?;
    let _guard = state.room_locks().lock(room).await;
    match membership(state, room, user).await? {
        Some(Membership::Join | Membership::Invite) => {}
        _ => return Err(ApiError::forbidden("You are not a member of this room.")),
    }
    let ts = now_ms();
    let ev = member_event(user, user, ts, json!({"membership": "leave"}))?;
    let change = MembershipChange::new(user.clone(), Membership::Leave, ts)
        .with_event_id(ev.event_id.clone());
    commit(state, room, vec![ev], vec![change]).await
}

/// The initial state of a room the admin API creates: owned by the server's user, invite
/// only, so only the admin API decides who is in it.
fn server_room_events(server_user: &UserId, ts: u64) -> Result<Vec<StoredEvent>, ApiError> {
    Ok(vec![
        state_event(
            CREATE,
            "",
            server_user,
            ts,
            json!({"creator": server_user.as_str(), "room_version": DEFAULT_ROOM_VERSION}),
        )?,
        state_event(
            POWER_LEVELS,
            "",
            server_user,
            ts,
            power_levels(&[server_user], &Map::new()),
        )?,
        state_event(
            JOIN_RULES,
            "",
            server_user,
            ts,
            json!({"join_rule": "invite"}),
        )?,
        state_event(
            HISTORY_VISIBILITY,
            "",
            server_user,
            ts,
            json!({"history_visibility": "shared"}),
        )?,
    ])
}

/// The admin API: sets `user`'s membership of `room` to joined or left directly, creating
/// the room (owned by the server) if needed. Setting the current membership again is a
/// no-op.
pub async fn admin_set_membership(
    state: &App,
    room: &RoomId,
    user: &UserId,
    join: bool,
) -> Result<(), ApiError> {
    let server_user = server_user(&state.config().server_name)?;
    let ts = now_ms();
    let _guard = state.room_locks().lock(room).await;
    let exists = state.store()?.get_room(room).await?.is_some();
    if !exists && !join {
        // Nobody is in a room that does not exist: nothing to leave.
        return Ok(());
    }
    let mut evs = Vec::new();
    if !exists {
        let record = RoomRecord::new(room.clone(), server_user.clone(), false, ts);
        match state.store()?.create_room(record).await {
            Ok(()) => {
                evs = server_room_events(&server_user, ts)?;
                tracing::info!(room = %room, "Created a room through the admin API.");
            }
            // Created in the meantime (by a path that does not take this room's lock).
            Err(StoreError::RoomExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let current = membership(state, room, user).await?;
    let target = if join {
        Membership::Join
    } else {
        Membership::Leave
    };
    if current == Some(target) || (!join && current.is_none()) {
        if join {
            // Make sure presence agrees (harmless when it already does).
            state.presence().join(room, user).await?;
        }
        return Ok(());
    }
    let content = if join {
        join_content(state, user).await?
    } else {
        json!({"membership": "leave"})
    };
    let ev = member_event(user, user, ts, content)?;
    let change = MembershipChange::new(user.clone(), target, ts).with_event_id(ev.event_id.clone());
    evs.push(ev);
    commit(state, room, evs, vec![change]).await
}

/// The event ID of a message sent with a transaction ID: derived from who sent it, from
/// which device, where, and the transaction ID, so a retried request maps onto the event
/// the first attempt stored instead of storing it twice.
fn transaction_event_id(user: &UserId, device: &DeviceId, room: &RoomId, txn_id: &str) -> String {
    let mut hash = Sha256::new();
    for part in [user.as_str(), device.as_str(), room.as_str(), txn_id] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    format!("${}", URL_SAFE_NO_PAD.encode(hash.finalize()))
}

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`: a joined member sends a message event.
/// Returns its event ID (the same one when the transaction is retried).
pub async fn send_event(
    state: &App,
    user: &UserId,
    device: &DeviceId,
    room: &RoomId,
    event_type: &str,
    txn_id: &str,
    content: Map<String, Value>,
) -> Result<String, ApiError> {
    existing_room(state, room).await?;
    if membership(state, room, user).await? != Some(Membership::Join) {
        return Err(ApiError::forbidden(format!("{user} is not in room {room}")));
    }
    state.limits().message(user)?;
    let event_id = transaction_event_id(user, device, room, txn_id);
    let ev = StoredEvent::new(
        event_id.clone(),
        event_type,
        user.clone(),
        now_ms(),
        Value::Object(content).to_string(),
    );
    match state.store()?.append_events(room, vec![ev]).await {
        Ok(_) => wake_room(state, room, &[]).await?,
        // The same transaction again: answer as the first time.
        Err(StoreError::EventExists) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(event_id)
}

/// The current state of a room the requester is joined to (403 otherwise).
pub async fn state_for_member(
    state: &App,
    user: &UserId,
    room: &RoomId,
) -> Result<Vec<OrderedEvent>, ApiError> {
    existing_room(state, room).await?;
    if membership(state, room, user).await? != Some(Membership::Join) {
        return Err(ApiError::forbidden(format!("{user} is not in room {room}")));
    }
    Ok(state.store()?.room_state(room).await?)
}

/// `GET /rooms/{roomId}/joined_members`: each joined member's display name and avatar, for
/// a requester who is joined.
pub async fn joined_members(
    state: &App,
    user: &UserId,
    room: &RoomId,
) -> Result<BTreeMap<String, Value>, ApiError> {
    let room_state = state_for_member(state, user, room).await?;
    Ok(room_state
        .iter()
        .filter(|e| e.event.event_type == MEMBER)
        .filter_map(|e| {
            let content = events::content(&e.event);
            (content["membership"] == "join").then(|| {
                let key = e.event.state_key.clone().unwrap_or_default();
                let profile = json!({
                    "display_name": content.get("displayname").cloned().unwrap_or(Value::Null),
                    "avatar_url": content.get("avatar_url").cloned().unwrap_or(Value::Null),
                });
                (key, profile)
            })
        })
        .collect())
}

/// `GET /joined_rooms`.
pub async fn joined_rooms(state: &App, user: &UserId) -> Result<Vec<RoomId>, ApiError> {
    Ok(state
        .store()?
        .rooms_of(user)
        .await?
        .into_iter()
        .filter(|(_, m)| *m == Membership::Join)
        .map(|(r, _)| r)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_checked() {
        let server = ServerName::parse("example.org").unwrap();
        assert_eq!(
            RoomAlias::local("lobby", &server).unwrap().as_str(),
            "#lobby:example.org"
        );
        for bad in ["", "a:b", "a b", "tab\t"] {
            assert!(RoomAlias::local(bad, &server).is_err(), "{bad:?}");
        }
        assert!(RoomAlias::parse("#a:example.org").is_ok());
        for bad in [
            "a:example.org",
            "#:example.org",
            "#a",
            "#a:bad server",
            "#a b:x.org",
        ] {
            assert_eq!(
                RoomAlias::parse(bad).unwrap_err().kind().errcode(),
                "M_INVALID_PARAM",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn presets_and_versions() {
        assert_eq!(Preset::parse("public_chat"), Some(Preset::PublicChat));
        assert_eq!(
            Preset::parse("private_chat").map(Preset::join_rule),
            Some("invite")
        );
        assert_eq!(
            Preset::parse("trusted_private_chat").map(Preset::join_rule),
            Some("invite")
        );
        assert_eq!(Preset::parse("secret"), None);
        assert!(NewRoom::check_version("10").is_ok());
        assert_eq!(
            NewRoom::check_version("99").unwrap_err().kind().errcode(),
            "M_UNSUPPORTED_ROOM_VERSION"
        );
    }

    #[test]
    fn power_levels_take_overrides() {
        let alice = UserId::parse("@alice:example.org").unwrap();
        let mut over = Map::new();
        over.insert("invite".into(), json!(50));
        let pl = power_levels(&[&alice], &over);
        assert_eq!(pl["users"]["@alice:example.org"], 100);
        assert_eq!(pl["invite"], 50);
        assert_eq!(pl["kick"], 50);
    }

    #[test]
    fn transaction_ids_give_stable_event_ids() {
        let alice = UserId::parse("@alice:example.org").unwrap();
        let d = DeviceId::parse("DEV").unwrap();
        let r = RoomId::parse("!r:example.org").unwrap();
        let a = transaction_event_id(&alice, &d, &r, "t1");
        assert_eq!(a, transaction_event_id(&alice, &d, &r, "t1"));
        assert_ne!(a, transaction_event_id(&alice, &d, &r, "t2"));
        let other = DeviceId::parse("OTHER").unwrap();
        assert_ne!(a, transaction_event_id(&alice, &other, &r, "t1"));
        assert!(a.starts_with('$') && a.len() == 44);
    }

    #[tokio::test]
    async fn locks_serialize_one_room() {
        let locks = RoomLocks::default();
        let r = RoomId::parse("!r:example.org").unwrap();
        let held = locks.lock(&r).await;
        let again =
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock(&r)).await;
        assert!(again.is_err(), "the same room waits");
        drop(held);
        let _ = locks.lock(&r).await;
    }
}
