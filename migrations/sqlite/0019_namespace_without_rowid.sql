-- The namespace tables keyed by their primary key alone (WITHOUT ROWID).
-- A table with a composite primary key and a rowid keeps each row twice:
-- in the table's b-tree by rowid and in the key's index. Every create then
-- changed two pages per table (inode, entry, request record), and in WAL
-- mode each changed page is a frame written with two write calls at commit:
-- a create wrote about ten frames. Keyed by the primary key, each row lives
-- in one b-tree and a create changes about seven pages. Rows here are small
-- (a few dozen bytes; symlink targets are the exception), as SQLite advises
-- for such tables. PostgreSQL has no rowid: its schema is unchanged.

CREATE TABLE inodes_by_key (
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
    stored      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (fs_id, ino)
) WITHOUT ROWID;
INSERT INTO inodes_by_key (fs_id, ino, kind, perm, uid, gid, nlink, size, atime_ns,
        mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains, stored)
    SELECT fs_id, ino, kind, perm, uid, gid, nlink, size, atime_ns,
        mtime_ns, ctime_ns, rdev, parent, target, chunk_size, chains, stored
    FROM inodes;
DROP TABLE inodes;
ALTER TABLE inodes_by_key RENAME TO inodes;

CREATE TABLE dentries_by_key (
    fs_id       TEXT NOT NULL,
    parent      BIGINT NOT NULL,
    name        BLOB NOT NULL,
    ino         BIGINT NOT NULL,
    kind        BIGINT NOT NULL,
    PRIMARY KEY (fs_id, parent, name)
) WITHOUT ROWID;
INSERT INTO dentries_by_key (fs_id, parent, name, ino, kind)
    SELECT fs_id, parent, name, ino, kind FROM dentries;
DROP TABLE dentries;
ALTER TABLE dentries_by_key RENAME TO dentries;

CREATE TABLE meta_requests_by_key (
    fs_id   TEXT NOT NULL,
    client  BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    ino     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (fs_id, client, seq)
) WITHOUT ROWID;
INSERT INTO meta_requests_by_key (fs_id, client, seq, ino, at)
    SELECT fs_id, client, seq, ino, at FROM meta_requests;
DROP TABLE meta_requests;
ALTER TABLE meta_requests_by_key RENAME TO meta_requests;
CREATE INDEX meta_requests_at ON meta_requests (at);
