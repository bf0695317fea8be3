-- The LDAP directory a file system resolves its users and groups from.
-- At most one per file system; without a row only root may use it.
CREATE TABLE ldap_configs (
    fs_id        TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    uri          TEXT NOT NULL,
    search_base  TEXT NOT NULL,
    bind_dn      TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
