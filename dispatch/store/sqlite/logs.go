package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// AppendLogs stores lines of a leased operation: lines with seq >= 1 once per (operation, seq), seq 0 lines
// as they come. It then advances the operation's contiguous last_seq. The walk costs the number of lines it
// advances over, so a long log costs linear time overall even when lines arrive out of order. ("seq > 0" is
// spelled out so SQLite may use the partial index on (op_seq, seq); INDEXED BY makes sure it does.)
func (s *Store) AppendLogs(ctx context.Context, ref store.LeaseRef, lines []api.LogLine) (api.AppendLogsResponse, error) {
	var resp api.AppendLogsResponse
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := s.held(ctx, tx, ref)
		if err != nil {
			return err
		}
		next := o.lastSeq + 1
		extends := false
		rows := make([]logRow, len(lines))
		for i, l := range lines {
			rows[i] = logRow{Seq: l.Seq, Time: nanos(l.Time), Stream: l.Stream, Text: l.Text}
			extends = extends || l.Seq == next
		}
		if len(rows) > 0 {
			batch, err := json.Marshal(rows)
			if err != nil {
				return fmt.Errorf("encoding the batch: %w", err)
			}
			// One statement for the whole batch, rows in batch order (so positions follow it); seq 0 lines
			// never conflict, since the unique index covers seq > 0 only.
			if _, err := s.txExec(ctx, tx, `INSERT INTO log_lines (op_seq, seq, time, stream, text)
				SELECT @op, j.value ->> 'seq', j.value ->> 'time', j.value ->> 'stream', j.value ->> 'text'
				FROM json_each(@batch) j WHERE true
				ON CONFLICT (op_seq, seq) WHERE seq > 0 DO NOTHING`, sql.Named("op", o.seq), sql.Named("batch", string(batch))); err != nil {
				return fmt.Errorf("storing %d lines: %w", len(rows), err)
			}
		}
		last, gap := o.lastSeq, false
		if extends {
			rows, err := s.txQuery(ctx, tx, `SELECT seq FROM log_lines INDEXED BY log_lines_seq WHERE op_seq = ? AND seq > ? AND seq > 0 ORDER BY seq`, o.seq, last)
			if err != nil {
				return fmt.Errorf("finding the contiguous end: %w", err)
			}
			for rows.Next() {
				var seq int64
				if err := rows.Scan(&seq); err != nil {
					rows.Close()
					return fmt.Errorf("finding the contiguous end: %w", err)
				}
				if seq != last+1 {
					gap = true
					break
				}
				last = seq
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("finding the contiguous end: %w", err)
			}
			if _, err := s.txExec(ctx, tx, `UPDATE operations SET last_seq = ? WHERE seq = ?`, last, o.seq); err != nil {
				return fmt.Errorf("recording the contiguous end: %w", err)
			}
		} else {
			var n int
			if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM (SELECT 1 FROM log_lines INDEXED BY log_lines_seq WHERE op_seq = ? AND seq > ? AND seq > 0 LIMIT 1)`,
				o.seq, last).Scan(&n); err != nil {
				return fmt.Errorf("looking for a gap: %w", err)
			}
			gap = n > 0
		}
		resp = api.AppendLogsResponse{LastSeq: last, Gap: gap}
		return nil
	})
	if err != nil {
		return resp, fmt.Errorf("appending logs of operation %s: %w", ref.OperationID, err)
	}
	return resp, nil
}

// logRow is a line as the batch insert reads it from JSON.
type logRow struct {
	Seq    int64  `json:"seq"`
	Time   int64  `json:"time"`
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// Logs returns up to limit lines of an operation after position after.
func (s *Store) Logs(ctx context.Context, id string, after int64, limit int) ([]api.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.rQuery(ctx, `SELECT pos, seq, time, stream, text FROM log_lines
		WHERE op_seq = (SELECT seq FROM operations WHERE id = ?) AND pos > ? ORDER BY pos LIMIT ?`, id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
	}
	defer rows.Close()
	lines := []api.LogLine{}
	for rows.Next() {
		var l api.LogLine
		var t int64
		if err := rows.Scan(&l.Pos, &l.Seq, &t, &l.Stream, &l.Text); err != nil {
			return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
		}
		l.Time = fromNanos(t)
		lines = append(lines, l)
	}
	return lines, rows.Err()
}
