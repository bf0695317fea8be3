-- The journal before: one prepared statement per round trip (pgbench -M prepared).
\set n random(1, 1000000000)
BEGIN;
SELECT epoch FROM meta_assignments WHERE fs_id = 'fs-1' FOR SHARE;
INSERT INTO dentries (fs_id, parent, name, ino, kind) VALUES ('fs-1', 1, decode(md5(:n::text), 'hex'), :n, 1) ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino, kind = excluded.kind;
INSERT INTO dentries (fs_id, parent, name, ino, kind) VALUES ('fs-1', 2, decode(md5(:n::text), 'hex'), :n, 1) ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino, kind = excluded.kind;
INSERT INTO dentries (fs_id, parent, name, ino, kind) VALUES ('fs-1', 3, decode(md5(:n::text), 'hex'), :n, 1) ON CONFLICT (fs_id, parent, name) DO UPDATE SET ino = excluded.ino, kind = excluded.kind;
UPDATE fs_counters SET next_ino = :n, used_bytes = 0, files = 1 WHERE fs_id = 'fs-1';
COMMIT;
