-- Version 1: the initial schema.
--
-- Text IDs are the full Matrix IDs. Timestamps are milliseconds since the Unix epoch.
-- Tables keyed by a text ID are WITHOUT ROWID so each write touches one B-tree.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,
    admin         INTEGER NOT NULL DEFAULT 0,
    creation_ts   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE devices (
    user_id      TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    created_ts   INTEGER NOT NULL,
    token_ts     INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

-- Only the SHA-256 of a token is stored, so a leaked database holds no usable tokens.
CREATE TABLE access_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
) WITHOUT ROWID;

-- Serves the cascade from devices and "delete this device's tokens".
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE rooms (
    room_id     TEXT PRIMARY KEY NOT NULL,
    creator     TEXT NOT NULL,
    is_public   INTEGER NOT NULL,
    creation_ts INTEGER NOT NULL
) WITHOUT ROWID;

-- AUTOINCREMENT: stream orderings are never reused, even after a rolled-back write.
CREATE TABLE events (
    stream_ordering  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms (room_id),
    event_type       TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    content          TEXT NOT NULL
);

CREATE INDEX events_room_ordering ON events (room_id, stream_ordering);

-- The latest state event per (room, type, state_key), maintained on append.
CREATE TABLE current_state (
    room_id         TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL REFERENCES events (stream_ordering),
    PRIMARY KEY (room_id, event_type, state_key)
) WITHOUT ROWID;

-- Users may be remote, so user_id has no foreign key. Keyed by room first: the startup scan
-- of joined members then comes out grouped by room.
CREATE TABLE memberships (
    room_id    TEXT NOT NULL REFERENCES rooms (room_id),
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL CHECK (membership IN ('join', 'invite', 'leave')),
    event_id   TEXT,
    updated_ts INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;

CREATE INDEX memberships_user ON memberships (user_id);

-- The latest presence per user (local or remote), with the stream id it was written at.
-- No secondary index: this is the hottest write path, and it is only scanned at startup.
CREATE TABLE presence (
    user_id                   TEXT PRIMARY KEY NOT NULL,
    stream_id                 INTEGER NOT NULL,
    state                     TEXT NOT NULL,
    last_active_ts            INTEGER NOT NULL,
    last_federation_update_ts INTEGER NOT NULL,
    last_user_sync_ts         INTEGER NOT NULL,
    status_msg                TEXT,
    currently_active          INTEGER NOT NULL
) WITHOUT ROWID;

-- Local users owed a full presence snapshot on their next sync.
CREATE TABLE full_presence_targets (
    user_id   TEXT PRIMARY KEY NOT NULL,
    stream_id INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE filters (
    user_id     TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    filter_id   INTEGER NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
) WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
