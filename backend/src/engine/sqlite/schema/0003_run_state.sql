-- How the last run of the relay ended, to tell a crash of the relay process (everything
-- written to the WAL survives it) from a power loss or an OS crash (writes not yet synced
-- are gone, so offsets given out for them could be given out again): `boot_id` is the
-- kernel's boot id during the run, `clean` is '1' once the run stopped cleanly. No rows: the
-- file comes from a relay that synced every commit, so nothing needs rotating.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
