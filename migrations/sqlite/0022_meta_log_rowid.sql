-- SQLite's journal now commits a log row per batch, as PostgreSQL's does
-- (postgres/0020_meta_log.sql), and folds the rows into the namespace
-- tables behind the commits. The table, empty until now, is made again as
-- a plain rowid table: AUTOINCREMENT writes sqlite_sequence in every
-- commit and the index by file system a second page, each costing about
-- half as much as the log row itself. The journal numbers rows so that a
-- number never comes back (meta/src/journal/sqlite.rs), and the log holds
-- a fold's worth of rows, which a scan by file system reads at once.
DROP TABLE meta_log;
CREATE TABLE meta_log (
    seq     INTEGER PRIMARY KEY,
    fs_id   TEXT NOT NULL,
    -- The owner epoch the batch was committed under (NULL: not by lease).
    epoch   BIGINT,
    body    BLOB NOT NULL
);
