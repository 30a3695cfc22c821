//! Clean and unclean stops: what a power loss could have taken back.
//!
//! Commits are written to the WAL without an fsync (the sync thread syncs them right after,
//! off the delivery path), so a crash of the relay process loses nothing, but a power loss
//! or an OS crash can take back the newest writes, messages members already saw included.
//! Offsets given out for them would then be given out again, to different messages.
//!
//! To rule that out, each run records the kernel's boot id and `clean = 0` in the `meta`
//! table (synced) when it starts, and `clean = 1` (synced) when it stops cleanly. At the next
//! start, an unclean stop under a different boot id means the machine went down with the
//! relay: we cannot tell which rooms had unsynced writes, so every room gets a new epoch, and
//! clients holding positions in the old one are told `unrecoverable` instead of being
//! silently handed different messages at offsets they have already seen.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::engine::new_epoch;

/// Where Linux publishes the id of the current boot, new at every boot.
pub const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// What [`begin`] found and recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    /// Rooms whose epoch was rotated.
    pub rotated: usize,
    /// This run's number on this store: 1 for the first, one more at every start.
    pub number: u32,
}

/// Starts a run: rotates every room's epoch if the last run ended with the machine (an
/// unclean stop under another boot id), then records this run as under way and numbers it.
/// All in one transaction, synced before the relay serves anyone.
pub(super) fn begin(connection: &mut Connection, boot_id_file: &Path) -> rusqlite::Result<Run> {
    let boot_id = std::fs::read_to_string(boot_id_file)
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty());
    if boot_id.is_none() {
        tracing::warn!(
            file = %boot_id_file.display(),
            "cannot read the kernel's boot id: any unclean stop will be treated as a power loss"
        );
    }
    synced(connection, |transaction| {
        let value = |key: &str| -> rusqlite::Result<Option<String>> {
            transaction
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()
        };
        let unclean = value("clean")?.is_some_and(|clean| clean != "1");
        let same_boot = boot_id.is_some() && value("boot_id")? == boot_id;
        let mut rotated = 0;
        if unclean && !same_boot {
            let rooms: Vec<String> = transaction
                .prepare("SELECT name FROM rooms")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for room in &rooms {
                transaction.execute(
                    "UPDATE rooms SET epoch = ?2 WHERE name = ?1",
                    params![room, new_epoch()],
                )?;
            }
            rotated = rooms.len();
            tracing::warn!(
                rooms = rotated,
                "the relay stopped uncleanly with the machine (power loss or OS crash): writes \
                 not yet synced may be lost, so every room starts a new epoch and clients \
                 holding older positions are told their history is unrecoverable"
            );
        }
        set(transaction, "boot_id", boot_id.as_deref().unwrap_or(""))?;
        set(transaction, "clean", "0")?;
        let number = value("runs")?
            .and_then(|runs| runs.parse::<u32>().ok())
            .unwrap_or(0)
            .wrapping_add(1)
            .max(1);
        set(transaction, "runs", &number.to_string())?;
        Ok(Run { rotated, number })
    })
}

/// Ends a run cleanly: everything written before is synced along with the mark.
pub(super) fn end(connection: &mut Connection) -> rusqlite::Result<()> {
    synced(connection, |transaction| set(transaction, "clean", "1"))
}

fn set(connection: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute([key, value])?;
    Ok(())
}

/// Runs `work` in a transaction whose commit is fsynced (`synchronous = FULL`), then puts
/// the connection back to `NORMAL`, the writer's usual setting (see `commit.rs`).
fn synced<T>(
    connection: &mut Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    connection.pragma_update(None, "synchronous", "FULL")?;
    let outcome = (|| {
        let transaction = connection.transaction()?;
        let value = work(&transaction)?;
        transaction.commit()?;
        Ok(value)
    })();
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    outcome
}
