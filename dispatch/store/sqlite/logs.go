package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Logs live in log_chunks (migrations/0002_log_chunks.sql): a batch is stored as few rows, each a run of
// lines whose numbered lines are contiguous. Storing a line costs encoding it; the B-trees see one insert per
// chunk.

// AppendLogs stores lines of a leased operation: lines with seq >= 1 once per (operation, seq), seq 0 lines
// as they come, all in batch order. It then advances the operation's contiguous last_seq.
//
// Seqs up to last_seq are stored already; of the rest, the runs the operation holds beyond last_seq are read
// (usually none: lines arrive in order), so lines stored before and repeats within the batch are dropped.
// What remains is cut into chunks wherever its numbered lines stop being contiguous. The walk of the
// contiguous end costs one look-up per chunk it advances over, so a long log costs linear time overall even
// when lines arrive out of order.
func (s *Store) AppendLogs(ctx context.Context, ref store.LeaseRef, lines []api.LogLine) (api.AppendLogsResponse, error) {
	var resp api.AppendLogsResponse
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := s.held(ctx, tx, ref)
		if err != nil {
			return err
		}
		last := o.LastSeq
		var hi int64
		for _, l := range lines {
			hi = max(hi, l.Seq)
		}
		var stored []store.SeqRun
		if hi > last {
			if stored, err = s.runsBeyond(ctx, tx, o.Seq, last, hi); err != nil {
				return err
			}
		}
		if err := s.checkRepeats(ctx, tx, o.Seq, lines, last, stored); err != nil {
			return err
		}
		cut, err := s.readLogCut(ctx, tx, o.Seq)
		if err != nil {
			return err
		}
		extends, added := false, int64(0)
		var kept int
		var keptBytes int64
		for _, c := range store.SplitChunks(store.CutChunks(lines, last, stored), store.PieceBytes(cut.Limit)) {
			if err := s.insertChunk(ctx, tx, o.Seq, c); err != nil {
				return fmt.Errorf("storing %d lines: %w", len(c.Lines), err)
			}
			extends, added = extends || c.Run.First == last+1, added+c.Size
			kept += len(c.Lines)
			for _, l := range c.Lines {
				keptBytes += int64(len(l.Text))
			}
		}
		if extends {
			for {
				var next int64
				err := s.txRow(ctx, tx, `SELECT last_seq FROM log_chunks WHERE op_seq = ? AND first_seq = ? AND first_seq > 0`,
					o.Seq, last+1).Scan(&next)
				if errors.Is(err, sql.ErrNoRows) {
					break
				}
				if err != nil {
					return fmt.Errorf("finding the contiguous end: %w", err)
				}
				last = next
			}
			if _, err := s.txExec(ctx, tx, `UPDATE operations SET last_seq = ? WHERE seq = ?`, last, o.Seq); err != nil {
				return fmt.Errorf("recording the contiguous end: %w", err)
			}
		}
		if err := s.cutLog(ctx, tx, o.Seq, cut, added, last, ref.Now); err != nil {
			return err
		}
		var n int
		if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM (SELECT 1 FROM log_chunks WHERE op_seq = ? AND first_seq > ? AND first_seq > 0 LIMIT 1)`,
			o.Seq, last).Scan(&n); err != nil {
			return fmt.Errorf("looking for a gap: %w", err)
		}
		resp = api.AppendLogsResponse{LastSeq: last, Gap: n > 0, Stored: kept, StoredBytes: keptBytes}
		return nil
	})
	if err != nil {
		return resp, fmt.Errorf("appending logs of operation %s: %w", ref.OperationID, err)
	}
	return resp, nil
}

// runsBeyond returns the runs of numbered lines an operation holds that start after its contiguous end last
// and at or before hi, in order. (Every run that holds a seq beyond last starts beyond it: otherwise the
// contiguous end would have walked over it.)
func (s *Store) runsBeyond(ctx context.Context, tx *sql.Tx, opSeq, last, hi int64) ([]store.SeqRun, error) {
	rows, err := s.txQuery(ctx, tx, `SELECT first_seq, last_seq FROM log_chunks
		WHERE op_seq = ? AND first_seq > ? AND first_seq <= ? AND first_seq > 0 ORDER BY first_seq`, opSeq, last, hi)
	if err != nil {
		return nil, fmt.Errorf("reading the lines held beyond %d: %w", last, err)
	}
	defer rows.Close()
	var runs []store.SeqRun
	for rows.Next() {
		var r store.SeqRun
		if err := rows.Scan(&r.First, &r.Last); err != nil {
			return nil, fmt.Errorf("reading the lines held beyond %d: %w", last, err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the lines held beyond %d: %w", last, err)
	}
	return runs, nil
}

// checkRepeats compares the lines of the batch whose seq is stored already (at or before last, or in one of
// the runs stored beyond it) with the stored ones, and refuses the batch with a *store.LogConflictError at
// the first whose stream or text differs. Lines that arrive in order are beyond everything stored: then it
// reads nothing.
func (s *Store) checkRepeats(ctx context.Context, tx *sql.Tx, opSeq int64, lines []api.LogLine, last int64, stored []store.SeqRun) error {
	lo, hi := store.RepeatedSeqs(lines, last, stored)
	if lo == 0 {
		return nil
	}
	// The runs holding lo..hi: from the one that holds lo (the last to start at or before it) to hi.
	rows, err := s.txQuery(ctx, tx, `SELECT pos, n, lines FROM log_chunks WHERE op_seq = ? AND first_seq > 0 AND first_seq <= ?
		AND first_seq >= (SELECT MAX(first_seq) FROM log_chunks WHERE op_seq = ? AND first_seq > 0 AND first_seq <= ?)
		ORDER BY first_seq`, opSeq, hi, opSeq, lo)
	if err != nil {
		return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
	}
	defer rows.Close()
	held := store.HeldLines{}
	for rows.Next() {
		var pos, n int64
		var data []byte
		if err := rows.Scan(&pos, &n, &data); err != nil {
			return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
		}
		if err := held.AddChunk(string(data), pos, n, lo, hi); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
	}
	return held.Conflict(lines)
}

// insertChunk stores c after every position in use.
func (s *Store) insertChunk(ctx context.Context, tx *sql.Tx, opSeq int64, c store.LogChunk) error {
	_, err := s.txExec(ctx, tx, `INSERT INTO log_chunks (pos, op_seq, first_seq, last_seq, n, lines)
		VALUES ((SELECT IFNULL(MAX(pos), 0) FROM log_chunks) + ?, ?, ?, ?, ?, ?)`,
		len(c.Lines), opSeq, c.Run.First, c.Run.Last, len(c.Lines), store.EncodeChunk(c.Lines))
	return err
}

// Logs returns up to limit lines of an operation after position after.
func (s *Store) Logs(ctx context.Context, id string, after int64, limit int) ([]api.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.rQuery(ctx, `SELECT pos, n, lines FROM log_chunks
		WHERE op_seq = (SELECT seq FROM operations WHERE id = ?) AND pos > ? ORDER BY pos`, id, after)
	if err != nil {
		return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
	}
	defer rows.Close()
	lines := []api.LogLine{}
	var data sql.RawBytes
	for len(lines) < limit && rows.Next() {
		var pos, n int64
		if err := rows.Scan(&pos, &n, &data); err != nil {
			return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
		}
		if len(lines) == 0 {
			lines = make([]api.LogLine, 0, min(int64(limit), pos-max(after, pos-n)))
		}
		if lines, err = store.DecodeChunk(lines, string(data), pos, n, after, limit); err != nil {
			return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
	}
	return lines, nil
}
