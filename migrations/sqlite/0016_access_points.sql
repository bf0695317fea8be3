-- CPFS access points: a directory of a file system that mounts through the
-- access point see as their root (and nothing above it).
CREATE TABLE access_points (
    access_point_id TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    fs_id           TEXT NOT NULL,
    root_path       TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- Creation order within the file system (listings are oldest first).
    seq             BIGINT NOT NULL
);
CREATE INDEX access_points_by_fs ON access_points (fs_id, seq);
