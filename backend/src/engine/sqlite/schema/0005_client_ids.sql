-- De-duplication without a random-write index: each room's client ids in a table of their
-- own, ordered by offset, so new ones are appended at the end of the room's range; the
-- commit thread holds them by hash (`client_ids.rs`). `messages.client_id` stays, for
-- reading entries back and for confirming a match.
CREATE TABLE client_ids (
    room      TEXT NOT NULL,
    "offset"  INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    PRIMARY KEY (room, "offset")
) WITHOUT ROWID;
INSERT INTO client_ids (room, "offset", client_id)
    SELECT room, "offset", client_id FROM messages WHERE client_id IS NOT NULL;
DROP INDEX messages_by_client_id;
