-- Metadata servers and which one owns each file system's namespace.
-- `last_seen_ms` is the control plane's wall-clock milliseconds of the
-- server's last heartbeat. An assignment takes effect at `since_ms` (a
-- move between live servers waits out the old owner's lease); `epoch`
-- grows with every change of owner, and the owner's journal checks it in
-- each commit, so a server that lost a file system can never write to it.
CREATE TABLE meta_servers (
    id              TEXT PRIMARY KEY,
    address         TEXT NOT NULL,
    last_seen_ms    BIGINT NOT NULL,
    registered_ms   BIGINT NOT NULL
);

CREATE TABLE meta_assignments (
    fs_id       TEXT PRIMARY KEY,
    server_id   TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    since_ms    BIGINT NOT NULL
);
