-- Version 3: client account data (`PUT /user/{userId}/account_data/{type}` and its per-room
-- form), served in `/sync`.
--
-- One row per (user, room, type); `room_id` is '' for global account data. A write replaces
-- the content and takes the next `stream_id`, so "what changed since position N" is a range
-- scan of the user's rows.

CREATE TABLE account_data (
    user_id   TEXT NOT NULL REFERENCES users (user_id),
    room_id   TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content   TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
) WITHOUT ROWID;

CREATE INDEX account_data_stream ON account_data (user_id, stream_id);
CREATE INDEX account_data_type ON account_data (data_type);
