-- Operations of the metadata service that are not idempotent (create,
-- mkdir, link, unlink, rename, xattr changes), by the id the client gave
-- them, written in the transaction that applies them: a client that retries
-- after a lost answer (a restart of the service) gets the first attempt's
-- outcome instead of EEXIST or ENOENT. `ino` is the inode the operation
-- made or linked (0 when there is none); rows are dropped after some minutes,
-- long after any client stopped retrying.
CREATE TABLE meta_requests (
    fs_id   TEXT NOT NULL,
    client  BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    ino     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (fs_id, client, seq)
);
CREATE INDEX meta_requests_at ON meta_requests (at);
