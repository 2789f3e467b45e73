-- Version 2: local room aliases (`#name:server` → room), so `/join/#alias` works.
--
-- One row per alias; the primary key makes an alias taken exactly once, even when two
-- requests race for it.

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY NOT NULL,
    room_id    TEXT NOT NULL REFERENCES rooms (room_id),
    creator    TEXT NOT NULL,
    created_ts INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX room_aliases_room ON room_aliases (room_id);
