-- Billing. The control plane records every change billing depends on in
-- fs_events, in the same transaction as the change; the rows outlive the
-- file system, so a deleted file system is still billed for the hours it
-- existed. The meter turns events into one usage row per (file system,
-- hour) and bill items; both have unique keys, so metering twice (two
-- processes, a restart, a backfill) never bills twice.

CREATE TABLE fs_events (
    fs_id           TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    account_id      TEXT NOT NULL,
    at              BIGINT NOT NULL,
    -- create, upgrade, renew, stop, delete
    kind            TEXT NOT NULL,
    storage_type    TEXT NOT NULL,
    capacity_gib    BIGINT NOT NULL,
    bandwidth_mbps  BIGINT NOT NULL,
    charge_type     TEXT NOT NULL,
    expired_at      BIGINT,
    -- months bought by a create (Subscription) or renew event
    months          BIGINT NOT NULL,
    zone_id         TEXT NOT NULL,
    description     TEXT NOT NULL,
    PRIMARY KEY (fs_id, seq)
);
CREATE INDEX fs_events_by_account ON fs_events(account_id, at);

-- How far the meter got per file system: hours before `metered_through`
-- are metered, events up to `charged_seq` have had their orders charged.
CREATE TABLE meter_state (
    fs_id           TEXT PRIMARY KEY,
    metered_through BIGINT NOT NULL,
    charged_seq     BIGINT NOT NULL,
    finished        BIGINT NOT NULL
);

CREATE TABLE usage_hours (
    fs_id                   TEXT NOT NULL,
    hour                    BIGINT NOT NULL,
    account_id              TEXT NOT NULL,
    seconds                 BIGINT NOT NULL,
    capacity_gib_seconds    BIGINT NOT NULL,
    bandwidth_mbps_seconds  BIGINT NOT NULL,
    used_bytes              BIGINT NOT NULL,
    bytes_read              BIGINT NOT NULL,
    bytes_written           BIGINT NOT NULL,
    metered_at              BIGINT NOT NULL,
    PRIMARY KEY (fs_id, hour)
);
CREATE INDEX usage_hours_by_account ON usage_hours(account_id, hour);

-- The node counters (cumulative bytes read and written) as last metered,
-- so each hour gets the difference.
CREATE TABLE usage_counters (
    fs_id           TEXT NOT NULL,
    node_id         TEXT NOT NULL,
    bytes_read      BIGINT NOT NULL,
    bytes_written   BIGINT NOT NULL,
    PRIMARY KEY (fs_id, node_id)
);

CREATE TABLE resource_plans (
    id                      TEXT PRIMARY KEY,
    account_id              TEXT NOT NULL,
    size_gib                BIGINT NOT NULL,
    months                  BIGINT NOT NULL,
    total_gib_seconds       BIGINT NOT NULL,
    remaining_gib_seconds   BIGINT NOT NULL,
    effective_at            BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL,
    created_at              BIGINT NOT NULL,
    remark                  TEXT NOT NULL
);
CREATE INDEX resource_plans_by_account ON resource_plans(account_id, expires_at);

-- Amounts are integers in 1/10000 of the currency unit.
CREATE TABLE bill_items (
    id                  TEXT PRIMARY KEY,
    record_id           TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    instance_id         TEXT NOT NULL,
    nickname            TEXT NOT NULL,
    zone_id             TEXT NOT NULL,
    instance_spec       TEXT NOT NULL,
    instance_config     TEXT NOT NULL,
    billing_cycle       TEXT NOT NULL,
    billing_date        TEXT NOT NULL,
    usage_start         BIGINT NOT NULL,
    usage_end           BIGINT NOT NULL,
    bill_type           TEXT NOT NULL,
    subscription_type   TEXT NOT NULL,
    item_code           TEXT NOT NULL,
    item_name           TEXT NOT NULL,
    usage_amount        TEXT NOT NULL,
    usage_unit          TEXT NOT NULL,
    list_price          TEXT NOT NULL,
    list_price_unit     TEXT NOT NULL,
    currency            TEXT NOT NULL,
    gross               BIGINT NOT NULL,
    deducted_by_plan    BIGINT NOT NULL,
    amount              BIGINT NOT NULL,
    plan_id             TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX bill_items_by_cycle ON bill_items(account_id, billing_cycle, usage_start);

-- File systems created before billing existed start their history here
-- (months 0: no order is charged for a term bought before billing).
INSERT INTO fs_events (fs_id, seq, account_id, at, kind, storage_type, capacity_gib, bandwidth_mbps, charge_type, expired_at, months, zone_id, description)
SELECT id, 1, account_id, created_at, 'create', storage_type, capacity_gib, bandwidth_mbps, charge_type, expired_at, 0, zone_id, description
FROM file_systems;
