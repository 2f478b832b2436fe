-- What an operation's script consumed, as its runner measured it (a JSON api.Usage; NULL when not measured),
-- and the index the requests advice reads the newest measured operations of a pool through.
ALTER TABLE operations ADD COLUMN usage TEXT;
CREATE INDEX operations_usage ON operations (pool, finished_at) WHERE usage IS NOT NULL;
