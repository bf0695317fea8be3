-- Data plane: the chain table, file-system layouts, and the namespace the
-- metadata service keeps (inodes, directory entries, extended attributes).
-- Names and xattr values are bytes: POSIX names need not be UTF-8.

CREATE TABLE chain_tables (
    version     BIGINT PRIMARY KEY,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE fs_layouts (
    fs_id           TEXT PRIMARY KEY,
    chunk_size      BIGINT NOT NULL,
    stripe_width    BIGINT NOT NULL,
    chains          TEXT NOT NULL
);

CREATE TABLE fs_counters (
    fs_id       TEXT PRIMARY KEY,
    next_ino    BIGINT NOT NULL,
    used_bytes  BIGINT NOT NULL,
    files       BIGINT NOT NULL
);

CREATE TABLE inodes (
    fs_id       TEXT NOT NULL,
    ino         BIGINT NOT NULL,
    kind        BIGINT NOT NULL,
    perm        BIGINT NOT NULL,
    uid         BIGINT NOT NULL,
    gid         BIGINT NOT NULL,
    nlink       BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    atime_ns    BIGINT NOT NULL,
    mtime_ns    BIGINT NOT NULL,
    ctime_ns    BIGINT NOT NULL,
    rdev        BIGINT NOT NULL,
    parent      BIGINT NOT NULL,
    target      BLOB,
    chunk_size  BIGINT NOT NULL,
    chains      TEXT NOT NULL,
    PRIMARY KEY (fs_id, ino)
);

CREATE TABLE dentries (
    fs_id       TEXT NOT NULL,
    parent      BIGINT NOT NULL,
    name        BLOB NOT NULL,
    ino         BIGINT NOT NULL,
    kind        BIGINT NOT NULL,
    PRIMARY KEY (fs_id, parent, name)
);

CREATE TABLE xattrs (
    fs_id       TEXT NOT NULL,
    ino         BIGINT NOT NULL,
    name        BLOB NOT NULL,
    value       BLOB NOT NULL,
    PRIMARY KEY (fs_id, ino, name)
);

-- Inodes whose last link is gone; their chunks are removed once no client
-- holds them open.
CREATE TABLE orphans (
    fs_id       TEXT NOT NULL,
    ino         BIGINT NOT NULL,
    since       BIGINT NOT NULL,
    PRIMARY KEY (fs_id, ino)
);

-- What each node last reported per file system (billing and statistics).
CREATE TABLE node_usage (
    node_id         TEXT NOT NULL,
    fs_id           TEXT NOT NULL,
    bytes_stored    BIGINT NOT NULL,
    bytes_read      BIGINT NOT NULL,
    bytes_written   BIGINT NOT NULL,
    read_ops        BIGINT NOT NULL,
    write_ops       BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (node_id, fs_id)
);

ALTER TABLE nodes ADD COLUMN checksum_errors BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN repairs BIGINT NOT NULL DEFAULT 0;
