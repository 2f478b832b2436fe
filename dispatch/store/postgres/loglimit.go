package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// An operation's log limit, as in the SQLite driver (see its loglimit.go and store.go's rules): past it,
// AppendLogs drops the chunks after the head lowest seq first, and one marker chunk holds the run of seqs
// dropped, at the highest position dropped. It all happens under the operation's row lock (lockLog), so
// concurrent appenders, on one server or several, cut one after the other and count every byte once.

// logCut is an operation's log limit and the state of its cut.
type logCut struct {
	limit, bytes               int64
	headSeq                    *int64
	droppedLines, droppedBytes int64
}

// cutLog keeps the operation's log within its limit after an append added added bytes and left the contiguous
// end at last. now is the marker line's time.
func cutLog(ctx context.Context, tx pgx.Tx, opSeq int64, c logCut, added, last int64, now time.Time) error {
	if c.limit <= 0 {
		return nil
	}
	c.bytes += added
	if c.bytes > c.limit {
		if c.headSeq == nil {
			head, err := findHead(ctx, tx, opSeq, c.limit/2, last)
			if err != nil {
				return err
			}
			if head > 0 { // no head yet while seq 1 is missing
				c.headSeq = &head
			}
		}
		if c.headSeq != nil {
			if err := dropMiddle(ctx, tx, opSeq, &c, last, now); err != nil {
				return err
			}
		}
	}
	_, err := tx.Exec(ctx, `UPDATE operations SET log_bytes = $1, log_head_seq = $2, log_dropped_lines = $3, log_dropped_bytes = $4
		WHERE seq = $5`, c.bytes, c.headSeq, c.droppedLines, c.droppedBytes, opSeq)
	if err != nil {
		return fmt.Errorf("recording the log's size: %w", err)
	}
	return nil
}

// findHead returns the last seq of the head: the contiguous chunks from seq 1 (at or before last) until they
// hold half bytes.
func findHead(ctx context.Context, tx pgx.Tx, opSeq, half, last int64) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT first_seq, last_seq, length(lines) FROM log_chunks
		WHERE op_seq = $1 AND first_seq > 0 AND first_seq <= $2 ORDER BY first_seq`, opSeq, last)
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
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("finding the log's head: %w", err)
	}
	return head, nil
}

// dropMiddle deletes the chunks after the head, lowest seq first, while the log is over its limit, and writes
// the marker that replaces them.
func dropMiddle(ctx context.Context, tx pgx.Tx, opSeq int64, c *logCut, last int64, now time.Time) error {
	first := *c.headSeq + 1
	end, markerPos, oldMarker := *c.headSeq, int64(0), int64(0)
	if c.droppedLines > 0 {
		if err := tx.QueryRow(ctx, `SELECT pos, last_seq FROM log_chunks WHERE op_seq = $1 AND first_seq = $2 AND first_seq > 0`,
			opSeq, first).Scan(&oldMarker, &end); err != nil {
			return fmt.Errorf("reading the log's cut marker: %w", err)
		}
		markerPos = oldMarker
	}
	dropped := false
	for c.bytes > c.limit {
		var pos, runEnd, n, size int64
		err := tx.QueryRow(ctx, `SELECT pos, last_seq, n, length(lines) FROM log_chunks WHERE op_seq = $1 AND first_seq = $2 AND first_seq > 0`,
			opSeq, end+1).Scan(&pos, &runEnd, &n, &size)
		if errors.Is(err, pgx.ErrNoRows) {
			break
		}
		if err != nil {
			return fmt.Errorf("finding the log's next lines to drop: %w", err)
		}
		if runEnd >= last {
			break // the tail keeps the contiguous end
		}
		if _, err := tx.Exec(ctx, `DELETE FROM log_chunks WHERE op_seq = $1 AND pos = $2`, opSeq, pos); err != nil {
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
		if _, err := tx.Exec(ctx, `DELETE FROM log_chunks WHERE op_seq = $1 AND pos = $2`, opSeq, oldMarker); err != nil {
			return fmt.Errorf("replacing the log's cut marker: %w", err)
		}
	}
	marker := store.AppendLogLine(nil, api.LogLine{Time: now, Stream: api.StreamSystem, Text: store.CutMarker(c.droppedLines, c.droppedBytes, c.limit)})
	if _, err := tx.Exec(ctx, `INSERT INTO log_chunks (op_seq, pos, first_seq, last_seq, n, lines) VALUES ($1, $2, $3, $4, 1, $5)`,
		opSeq, markerPos, first, end, marker); err != nil {
		return fmt.Errorf("writing the log's cut marker: %w", err)
	}
	return nil
}
