-- The PostgreSQL journal's log. A batch commits one row per file system
-- here (its coalesced changes, encoded), one statement instead of one per
-- changed row; the journal folds the rows into the namespace tables
-- behind the commits, many batches in one transaction, and deletes them.
-- A file system's rows left here (its server stopped before folding them)
-- are folded by whichever server loads it next, before it reads the tables.
CREATE TABLE meta_log (
    seq     BIGSERIAL PRIMARY KEY,
    fs_id   TEXT NOT NULL,
    -- The owner epoch the batch was committed under (NULL: not by lease).
    epoch   BIGINT,
    body    BYTEA NOT NULL
);
CREATE INDEX meta_log_by_fs ON meta_log (fs_id, seq);
