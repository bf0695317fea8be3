-- Control-plane desired state: accounts, file systems, mount targets, access
-- groups, tags, idempotency tokens, and the data-node registry.
-- Times are UNIX seconds (BIGINT) so the same code reads SQLite and PostgreSQL.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE access_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    secret      TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE file_systems (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id),
    fs_type             TEXT NOT NULL,
    protocol_type       TEXT NOT NULL,
    storage_type        TEXT NOT NULL,
    description         TEXT NOT NULL,
    status              TEXT NOT NULL,
    region_id           TEXT NOT NULL,
    zone_id             TEXT NOT NULL,
    vpc_id              TEXT NOT NULL,
    vswitch_id          TEXT NOT NULL,
    capacity_gib        BIGINT NOT NULL,
    bandwidth_mbps      BIGINT NOT NULL,
    charge_type         TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expired_at          BIGINT,
    encrypt_type        BIGINT NOT NULL,
    options_json        TEXT NOT NULL,
    auto_upgrade_json   TEXT NOT NULL,
    metered_size        BIGINT NOT NULL,
    status_reason       TEXT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX file_systems_by_account ON file_systems(account_id, created_at);
CREATE INDEX file_systems_by_status ON file_systems(status);

CREATE TABLE mount_targets (
    domain          TEXT PRIMARY KEY,
    fs_id           TEXT NOT NULL REFERENCES file_systems(id),
    account_id      TEXT NOT NULL,
    network_type    TEXT NOT NULL,
    vpc_id          TEXT NOT NULL,
    vswitch_id      TEXT NOT NULL,
    access_group    TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX mount_targets_by_fs ON mount_targets(fs_id, created_at);
CREATE INDEX mount_targets_by_status ON mount_targets(status);

CREATE TABLE access_groups (
    account_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    group_type      TEXT NOT NULL,
    description     TEXT NOT NULL,
    fs_type         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE access_rules (
    account_id          TEXT NOT NULL,
    group_name          TEXT NOT NULL,
    rule_id             BIGINT NOT NULL,
    source_cidr         TEXT NOT NULL,
    ipv6_source_cidr    TEXT NOT NULL,
    rw_access           TEXT NOT NULL,
    user_access         TEXT NOT NULL,
    priority            BIGINT NOT NULL,
    PRIMARY KEY (account_id, group_name, rule_id)
);

CREATE TABLE tags (
    account_id      TEXT NOT NULL,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    tag_key         TEXT NOT NULL,
    tag_value       TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, tag_key)
);
CREATE INDEX tags_by_account ON tags(account_id, tag_key);

CREATE TABLE idempotency_tokens (
    account_id      TEXT NOT NULL,
    action          TEXT NOT NULL,
    token           TEXT NOT NULL,
    response        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (account_id, action, token)
);

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    address         TEXT NOT NULL,
    zone_id         TEXT NOT NULL,
    capacity_bytes  BIGINT NOT NULL,
    state           TEXT NOT NULL,
    last_heartbeat  BIGINT NOT NULL,
    registered_at   BIGINT NOT NULL
);

CREATE TABLE reservations (
    fs_id           TEXT NOT NULL,
    node_id         TEXT NOT NULL REFERENCES nodes(id),
    bytes           BIGINT NOT NULL,
    PRIMARY KEY (fs_id, node_id)
);
