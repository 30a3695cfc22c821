-- Exact de-duplication: a client id names at most one message per room. Older relays could
-- store a late original twice; keep the first copy's id and drop the id from later copies
-- (their text stays in the history).
UPDATE messages SET client_id = NULL
WHERE client_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM messages AS earlier
    WHERE earlier.room = messages.room
      AND earlier.client_id = messages.client_id
      AND earlier."offset" < messages."offset"
);
DROP INDEX messages_by_client_id;
CREATE UNIQUE INDEX messages_by_client_id ON messages (room, client_id) WHERE client_id IS NOT NULL;

-- Each room's newest time, so times never go backwards within a room across restarts, and
-- whether a message came from a plain client (relayed to other plain clients unchanged).
ALTER TABLE rooms ADD COLUMN last_ts INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET last_ts = coalesce((SELECT max(ts) FROM messages WHERE room = rooms.name), 0);
ALTER TABLE messages ADD COLUMN plain INTEGER NOT NULL DEFAULT 0;
