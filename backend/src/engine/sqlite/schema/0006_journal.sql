-- Messages as commits store them, in commit order, so a commit appends a page or two
-- however many rooms it touches. The commit thread moves the oldest rows into `messages`
-- (kept by room) in large batches; readers read both (`journal.rs`).
CREATE TABLE journal (
    seq       INTEGER PRIMARY KEY,
    room      TEXT NOT NULL,
    "offset"  INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    sender    TEXT NOT NULL,
    text      TEXT NOT NULL,
    client_id TEXT,
    source    INTEGER NOT NULL
);
-- The ids are read from the messages that carry them (`client_ids.rs`): a table of their
-- own would be written again by every move out of the journal.
DROP TABLE client_ids;
