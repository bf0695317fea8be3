-- Failure detection and the planner's inputs. `last_seen_ms` is wall-clock
-- milliseconds of the node's last heartbeat (never the injected billing
-- clock: a month skipped in a billing rehearsal must not declare every node
-- dead). `report` is the node's latest JSON report: bytes per chain,
-- resync progress, scrub counters.
ALTER TABLE nodes ADD COLUMN last_seen_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN report TEXT NOT NULL DEFAULT '{}';
