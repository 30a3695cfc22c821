-- Rooms ever used: their history epoch and the newest offset given out.
CREATE TABLE rooms (
    name        TEXT PRIMARY KEY,
    epoch       TEXT NOT NULL,
    last_offset INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Every accepted message, keyed by room and offset.
CREATE TABLE messages (
    room      TEXT NOT NULL,
    "offset"  INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    sender    TEXT NOT NULL,
    text      TEXT NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room, "offset")
) WITHOUT ROWID;

-- Finds an earlier copy of a resent message (same room, same client id).
CREATE INDEX messages_by_client_id ON messages (room, client_id) WHERE client_id IS NOT NULL;
