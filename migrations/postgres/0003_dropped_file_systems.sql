-- Deleted file systems, so that every node drops their chunks on its next
-- heartbeat, including nodes that were down when the deletion happened.
CREATE TABLE dropped_file_systems (
    fs_id       TEXT PRIMARY KEY,
    dropped_at  BIGINT NOT NULL
);
