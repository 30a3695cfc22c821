//! The journal: where every commit stores its messages, in commit order.
//!
//! Tables kept by room (keyed by room and offset) put each room's new rows at the end of the
//! room's range: a commit touching eight rooms wrote a leaf page of `messages` and one of
//! the ids' table (schema 5) for each room, about 17 pages (70 KiB of WAL, copied again by
//! the checkpoint) for a batch of ten 64-byte messages. The journal is keyed by a sequence
//! number instead, so a commit appends to its last page or two however many rooms it
//! touches. Once it holds [`HIGH`] rows, a commit also moves all but the newest [`KEEP`]
//! into `messages` in the same transaction: dozens of messages per room page, so each page
//! is written once for many messages.
//!
//! A text of [`LARGE`] bytes or more fills a page or more by itself, so there is nothing to
//! share: it goes straight to `messages`, written once rather than twice.
//!
//! Readers read both, in one statement (one snapshot): a row moves from the journal to the
//! tables in one transaction, so a reader sees it in exactly one of them. The journal has no
//! index by room; it stays short enough to scan: after each commit it holds fewer than
//! [`HIGH`] rows (or [`KEEP`], if the commit moved rows), however large the batch. Retention
//! deletes from it too (`prune` in `mod.rs`).

use rusqlite::{Connection, OptionalExtension};

/// Rows in the journal at which a commit moves all but the newest [`KEEP`] into `messages`.
pub(super) const HIGH: u64 = 1024;
/// Rows left in the journal by a move.
const KEEP: u64 = 512;
/// Texts of this many bytes or more skip the journal.
pub(super) const LARGE: usize = 1024;

/// The columns of an entry, as every read of messages selects them.
pub(super) const ENTRY_COLUMNS: &str = "\"offset\", ts, sender, text, client_id, source";

/// What the commit thread knows of the journal: its length after the last commit, if known
/// (read again after a failed batch).
#[derive(Debug, Default)]
pub(super) struct Journal {
    rows: Option<u64>,
}

impl Journal {
    /// Inside a batch's transaction, after its appends (`appended` rows): moves all but the
    /// newest [`KEEP`] rows into `messages` if the journal is long. Returns the journal's length
    /// for [`Journal::committed`].
    pub(super) fn settle(&self, transaction: &Connection, appended: u64) -> rusqlite::Result<u64> {
        // Counted inside the transaction, its own appends included.
        let count = || {
            transaction.query_row("SELECT count(*) FROM journal", [], |row| {
                row.get::<_, i64>(0).map(|count| count.max(0) as u64)
            })
        };
        // At least the journal's length: retention may have deleted from it since.
        let rows = match self.rows {
            Some(rows) => rows + appended,
            None => count()?,
        };
        if rows < HIGH {
            return Ok(rows);
        }
        // The oldest row kept: rows before it move.
        let kept: Option<i64> = transaction
            .prepare_cached("SELECT seq FROM journal ORDER BY seq DESC LIMIT 1 OFFSET ?1")?
            .query_row([KEEP as i64 - 1], |row| row.get(0))
            .optional()?;
        let Some(kept) = kept else {
            // Retention left fewer than that.
            return count();
        };
        let upto = kept - 1;
        transaction
            .prepare_cached(&format!(
                // In commit order, not sorted by room: each room's rows still arrive in
                // offset order, at the end of its range, so the pages written are the same;
                // sorting them first cost about 5% of a durable publish's instructions.
                "INSERT INTO messages (room, {ENTRY_COLUMNS})
                 SELECT room, {ENTRY_COLUMNS} FROM journal WHERE seq <= ?1"
            ))?
            .execute([upto])?;
        transaction
            .prepare_cached("DELETE FROM journal WHERE seq <= ?1")?
            .execute([upto])?;
        Ok(KEEP)
    }

    /// The batch `settle` answered `rows` for is committed (`None`: it failed, and the
    /// length is read again).
    pub(super) fn committed(&mut self, rows: Option<u64>) {
        self.rows = rows;
    }
}
