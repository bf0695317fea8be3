-- Nothing on SQLite: its journal checks the owner's epoch with a query
-- inside its write transaction (PostgreSQL's gets a function, 0010 there).
SELECT 1;
