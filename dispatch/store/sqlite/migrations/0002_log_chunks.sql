-- Logs are stored in chunks: one row per run of lines that arrived in one batch, instead of one row per line.
-- A 5,000-line batch costs one B-tree insert per index instead of 5,000, and a read decodes a few rows.
--
-- A chunk holds n lines whose positions (the follow cursor) are pos-n+1 .. pos: pos is the position of its
-- last line, allocated from the largest pos stored, so positions still increase in commit order (one writer).
-- Its numbered lines (seq >= 1) form one contiguous run first_seq .. last_seq (both 0 when it holds only the
-- worker's seq 0 notes, which may sit anywhere in a chunk). The runs of one operation never overlap, so a seq
-- is stored once; the unique index enforces it and serves the walk of the contiguous end (first_seq = x + 1)
-- and the look-up of runs stored beyond it.
--
-- lines is the chunk's lines back to back, each "<seq> <time> <stream> <bytes>:<text>\n": seq, time (Unix
-- nanoseconds) and the text's length in bytes in decimal, the stream's name, then the text as is.
CREATE TABLE log_chunks (
    pos       INTEGER PRIMARY KEY,
    op_seq    INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    lines     BLOB NOT NULL
);
CREATE UNIQUE INDEX log_chunks_seq ON log_chunks (op_seq, first_seq) WHERE first_seq > 0;
CREATE INDEX log_chunks_op ON log_chunks (op_seq, pos);

-- Every line stored so far becomes a chunk of its own, at its own position: cursors held by followers stay
-- valid across the upgrade.
INSERT INTO log_chunks (pos, op_seq, first_seq, last_seq, n, lines)
SELECT pos, op_seq, seq, seq, 1,
       CAST(seq || ' ' || time || ' ' || stream || ' ' || length(CAST(text AS BLOB)) || ':' || text || char(10) AS BLOB)
FROM log_lines ORDER BY pos;

DROP TABLE log_lines;
