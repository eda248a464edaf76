-- Point-in-time recovery of the embedded store (M8): every committed change, as the SQL that
-- replays it, written by triggers in the same transaction as the change, until the shipper has
-- copied it (encrypted) to the backup target. The triggers are installed only while a backup
-- target is set (see src/change_journal.rs). Rows with a NULL stmt are marks: written in a
-- transaction of their own, so every change before a mark committed before it.
CREATE TABLE fv_change_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    stmt TEXT,
    blob_name TEXT
);

-- The journal's timeline: a new one starts whenever continuity with the shipped journal is
-- broken (journal switched off and on, or the database restored), so two histories that reuse
-- the same sequence numbers never mix on the target.
CREATE TABLE fv_journal_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    timeline TEXT NOT NULL
);
