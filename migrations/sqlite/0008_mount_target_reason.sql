-- Why a mount target is not yet where it should be (the reconciler's last
-- failure), on the mount target's own row.
ALTER TABLE mount_targets ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
