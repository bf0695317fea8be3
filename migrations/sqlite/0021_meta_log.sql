-- The PostgreSQL journal's log (see the PostgreSQL migration of the same
-- name). SQLite's journal writes the namespace tables in each commit and
-- leaves this table empty; it exists so both stores have one schema.
CREATE TABLE meta_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    fs_id   TEXT NOT NULL,
    epoch   BIGINT,
    body    BLOB NOT NULL
);
CREATE INDEX meta_log_by_fs ON meta_log (fs_id, seq);
