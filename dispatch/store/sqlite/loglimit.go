package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// An operation's log limit (migrations/0006_log_limit.sql; the rules are store.go's). Past it, AppendLogs
// drops the chunks after the head lowest seq first, so what was dropped is one run of seqs. One marker chunk
// holds it: its one line says what was dropped, and its first_seq..last_seq keep the run stored for the
// contiguous end and for re-sends. The marker sits at the highest position dropped, so a follower whose cursor
// lies before a dropped line meets it before any line after it.

// logCut is an operation's log limit and the state of its cut.
type logCut struct {
	limit, bytes               int64
	headSeq                    sql.NullInt64
	droppedLines, droppedBytes int64
}

// readLogCut reads the log limit of the operation with row seq opSeq.
func (s *Store) readLogCut(ctx context.Context, tx *sql.Tx, opSeq int64) (logCut, error) {
	var c logCut
	err := s.txRow(ctx, tx, `SELECT log_limit, log_bytes, log_head_seq, log_dropped_lines, log_dropped_bytes
		FROM operations WHERE seq = ?`, opSeq).Scan(&c.limit, &c.bytes, &c.headSeq, &c.droppedLines, &c.droppedBytes)
	if err != nil {
		return c, fmt.Errorf("reading the log limit: %w", err)
	}
	return c, nil
}

// cutLog keeps the operation's log within its limit after an append added added bytes and left the contiguous
// end at last (see above). now is the marker line's time.
func (s *Store) cutLog(ctx context.Context, tx *sql.Tx, opSeq int64, c logCut, added, last int64, now time.Time) error {
	if c.limit <= 0 {
		return nil
	}
	c.bytes += added
	if c.bytes > c.limit {
		if !c.headSeq.Valid {
			head, err := s.findHead(ctx, tx, opSeq, c.limit/2, last)
			if err != nil {
				return err
			}
			c.headSeq = sql.NullInt64{Int64: head, Valid: head > 0} // no head yet while seq 1 is missing
		}
		if c.headSeq.Valid {
			if err := s.dropMiddle(ctx, tx, opSeq, &c, last, now); err != nil {
				return err
			}
		}
	}
	_, err := s.txExec(ctx, tx, `UPDATE operations SET log_bytes = ?, log_head_seq = ?, log_dropped_lines = ?, log_dropped_bytes = ?
		WHERE seq = ?`, c.bytes, c.headSeq, c.droppedLines, c.droppedBytes, opSeq)
	if err != nil {
		return fmt.Errorf("recording the log's size: %w", err)
	}
	return nil
}

// findHead returns the last seq of the head: the contiguous chunks from seq 1 (at or before last) until they
// hold half bytes.
func (s *Store) findHead(ctx context.Context, tx *sql.Tx, opSeq, half, last int64) (int64, error) {
	rows, err := s.txQuery(ctx, tx, `SELECT first_seq, last_seq, length(lines) FROM log_chunks
		WHERE op_seq = ? AND first_seq > 0 AND first_seq <= ? ORDER BY first_seq`, opSeq, last)
	if err != nil {
		return 0, fmt.Errorf("finding the log's head: %w", err)
	}
	defer rows.Close()
	var head, acc int64
	for acc < half && rows.Next() {
		var first, lastSeq, size int64
		if err := rows.Scan(&first, &lastSeq, &size); err != nil {
			return 0, fmt.Errorf("finding the log's head: %w", err)
		}
		if first != head+1 {
			break
		}
		head, acc = lastSeq, acc+size
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("finding the log's head: %w", err)
	}
	return head, nil
}

// dropMiddle deletes the chunks after the head, lowest seq first, while the log is over its limit, and writes
// the marker that replaces them.
func (s *Store) dropMiddle(ctx context.Context, tx *sql.Tx, opSeq int64, c *logCut, last int64, now time.Time) error {
	first := c.headSeq.Int64 + 1
	end, markerPos, oldMarker := c.headSeq.Int64, int64(0), int64(0)
	if c.droppedLines > 0 {
		if err := s.txRow(ctx, tx, `SELECT pos, last_seq FROM log_chunks WHERE op_seq = ? AND first_seq = ? AND first_seq > 0`,
			opSeq, first).Scan(&oldMarker, &end); err != nil {
			return fmt.Errorf("reading the log's cut marker: %w", err)
		}
		markerPos = oldMarker
	}
	dropped := false
	for c.bytes > c.limit {
		var pos, runEnd, n, size int64
		err := s.txRow(ctx, tx, `SELECT pos, last_seq, n, length(lines) FROM log_chunks WHERE op_seq = ? AND first_seq = ? AND first_seq > 0`,
			opSeq, end+1).Scan(&pos, &runEnd, &n, &size)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return fmt.Errorf("finding the log's next lines to drop: %w", err)
		}
		if runEnd >= last {
			break // the tail keeps the contiguous end
		}
		if _, err := s.txExec(ctx, tx, `DELETE FROM log_chunks WHERE pos = ?`, pos); err != nil {
			return fmt.Errorf("dropping log lines %d..%d: %w", end+1, runEnd, err)
		}
		c.bytes -= size
		c.droppedLines += n
		c.droppedBytes += size
		end, markerPos, dropped = runEnd, max(markerPos, pos), true
	}
	if !dropped {
		return nil
	}
	if oldMarker != 0 {
		if _, err := s.txExec(ctx, tx, `DELETE FROM log_chunks WHERE pos = ?`, oldMarker); err != nil {
			return fmt.Errorf("replacing the log's cut marker: %w", err)
		}
	}
	marker := store.AppendLogLine(nil, api.LogLine{Time: now, Stream: api.StreamSystem, Text: store.CutMarker(c.droppedLines, c.droppedBytes, c.limit)})
	if _, err := s.txExec(ctx, tx, `INSERT INTO log_chunks (pos, op_seq, first_seq, last_seq, n, lines) VALUES (?, ?, ?, ?, 1, ?)`,
		markerPos, opSeq, first, end, marker); err != nil {
		return fmt.Errorf("writing the log's cut marker: %w", err)
	}
	return nil
}
