-- Per-file-system statistics (DescribeFileSystemTimeSeries, the console's
-- charts): the I/O clients were served, counted once per request by the
-- node that served it, and the capacity used, kept per minute for 7 days.

-- Each node's counters as last reported; a heartbeat adds the difference
-- to the minute it arrives in.
ALTER TABLE node_usage ADD COLUMN served_reads BIGINT NOT NULL DEFAULT 0;
ALTER TABLE node_usage ADD COLUMN served_read_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE node_usage ADD COLUMN served_read_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE node_usage ADD COLUMN served_writes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE node_usage ADD COLUMN served_write_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE node_usage ADD COLUMN served_write_us BIGINT NOT NULL DEFAULT 0;

CREATE TABLE fs_minutes (
    fs_id        TEXT NOT NULL,
    -- Unix seconds at the start of the minute.
    minute       BIGINT NOT NULL,
    reads        BIGINT NOT NULL DEFAULT 0,
    read_bytes   BIGINT NOT NULL DEFAULT 0,
    read_us      BIGINT NOT NULL DEFAULT 0,
    writes       BIGINT NOT NULL DEFAULT 0,
    write_bytes  BIGINT NOT NULL DEFAULT 0,
    write_us     BIGINT NOT NULL DEFAULT 0,
    -- The latest MeteredSize seen in the minute (-1: none sampled yet).
    used_bytes   BIGINT NOT NULL DEFAULT -1,
    PRIMARY KEY (fs_id, minute)
);
CREATE INDEX fs_minutes_by_minute ON fs_minutes (minute);
