-- The bytes of each file's data that count as used (`du`'s figure): the
-- furthest any write reached, at most the size. A truncate that extends a
-- file adds none. Files written before this column existed count their
-- whole size, as they did.
ALTER TABLE inodes ADD COLUMN stored BIGINT NOT NULL DEFAULT 0;
UPDATE inodes SET stored = size WHERE kind = 1;
