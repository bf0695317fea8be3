-- User and group quotas (a CPFS extension, as Lustre and JuiceFS have
-- them): hard limits on the bytes and inodes a uid or gid owns in one file
-- system. `user_quotas` is the control plane's desired state;
-- `user_quota_usage` belongs to the metadata service: the limits it
-- enforces and the usage it publishes for each limited id.
CREATE TABLE user_quotas (
    fs_id            TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    -- 'Uid' or 'Gid'.
    user_type        TEXT NOT NULL,
    user_id          BIGINT NOT NULL,
    -- NULL: no limit.
    size_limit       BIGINT,
    file_count_limit BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (fs_id, user_type, user_id)
);

CREATE TABLE user_quota_usage (
    fs_id            TEXT NOT NULL,
    user_type        TEXT NOT NULL,
    user_id          BIGINT NOT NULL,
    used_bytes       BIGINT NOT NULL,
    files            BIGINT NOT NULL,
    -- As enforced; -1: no limit.
    size_limit       BIGINT NOT NULL,
    file_count_limit BIGINT NOT NULL,
    PRIMARY KEY (fs_id, user_type, user_id)
);
