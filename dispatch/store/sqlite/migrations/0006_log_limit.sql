-- An operation's log limit and the state of its cut (sqlite/loglimit.go). log_limit is set when the operation
-- is leased (bytes; 0: none, as for operations leased before this migration). log_bytes is what its chunks
-- hold (length(lines) summed; the cut marker aside). Once the log passes its limit, log_head_seq is the last
-- seq of its head; the numbered lines dropped after it are one run, log_head_seq+1 .. k, held by one marker
-- chunk (one seq 0 line, first_seq log_head_seq+1, last_seq k), and log_dropped_lines/bytes count them.
ALTER TABLE operations ADD COLUMN log_limit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE operations ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE operations ADD COLUMN log_head_seq INTEGER;
ALTER TABLE operations ADD COLUMN log_dropped_lines INTEGER NOT NULL DEFAULT 0;
ALTER TABLE operations ADD COLUMN log_dropped_bytes INTEGER NOT NULL DEFAULT 0;
