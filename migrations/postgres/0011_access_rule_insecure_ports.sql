-- Whether a rule also admits clients whose metadata connection comes from
-- an unprivileged source port (the InsecurePorts extension parameter, as
-- NFS's `insecure` export option): 0 requires a port below 1024, so only
-- root on an admitted host can speak for its users.
ALTER TABLE access_rules ADD COLUMN insecure_ports BIGINT NOT NULL DEFAULT 0;
