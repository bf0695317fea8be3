-- Filesets: directory subtrees of a file system that the service tracks,
-- each with optional limits. `filesets` is the control plane's desired
-- state (what the API created); `fileset_usage` belongs to the metadata
-- service: the root inode it bound, the limits it enforces now and the
-- exact usage, written by its journal in the same transaction as the
-- namespace change that moved it.
CREATE TABLE filesets (
    fset_id             TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL,
    fs_id               TEXT NOT NULL,
    path                TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    deletion_protection BIGINT NOT NULL DEFAULT 0,
    status              TEXT NOT NULL,
    -- NULL: no limit.
    size_limit          BIGINT,
    file_count_limit    BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    -- Creation order within the file system (listings are oldest first;
    -- created_at has only seconds).
    seq                 BIGINT NOT NULL,
    UNIQUE (fs_id, path)
);
CREATE INDEX filesets_by_fs ON filesets (fs_id, seq);

CREATE TABLE fileset_usage (
    fs_id            TEXT NOT NULL,
    fset_id          TEXT NOT NULL,
    ino              BIGINT NOT NULL,
    used_bytes       BIGINT NOT NULL,
    files            BIGINT NOT NULL,
    -- As enforced; -1: no limit.
    size_limit       BIGINT NOT NULL,
    file_count_limit BIGINT NOT NULL,
    PRIMARY KEY (fs_id, fset_id)
);
