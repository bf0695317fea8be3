-- Client fencing (AddClientToBlackList): a client address refused by
-- every mount target of one file system, its capabilities revoked on the
-- nodes. The state (EVICTING, then EVICTED) follows from the time it was
-- added: by then every serving node has applied the revocation.
CREATE TABLE client_fences (
    fs_id         TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    client_ip     TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (fs_id, client_ip)
);

-- Mounted clients (DescribeMountedClients): each metadata server publishes
-- its sessions every few seconds; rows of a server that stopped age out.
CREATE TABLE meta_sessions (
    session_id     BIGINT PRIMARY KEY,
    publisher      TEXT NOT NULL,
    fs_id          TEXT NOT NULL,
    domain         TEXT NOT NULL,
    client_ip      TEXT NOT NULL,
    access_point   TEXT NOT NULL DEFAULT '',
    mounted_at     BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL
);
CREATE INDEX meta_sessions_by_fs ON meta_sessions (fs_id, last_active_at);
CREATE INDEX meta_sessions_by_publisher ON meta_sessions (publisher);
