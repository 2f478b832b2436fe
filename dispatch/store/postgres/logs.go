package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Logs live in log_chunks as in the SQLite driver (store/logchunk.go encodes them), with one difference:
// positions count per operation, and an append gives them out while it holds the operation's row lock.
//
// Why: a follower reads "pos > p" and must never miss a line committed later with a smaller position. With a
// global counter (a sequence, or MAX(pos) over the table) two transactions take positions 5 and 6, the one
// with 6 commits first, a follower reads up to 6, then 5 commits behind its cursor. Here every append (and
// every server's) first locks the operation's row (lockLog); positions are read and given out after the lock,
// and the lock is held until commit, so one operation's positions commit in the order they were given out.
// Followers follow one operation, so that is the order they need. TestConcurrentAppendsFollower checks it.
// The lock is what keeps the order (a sequence read under it would too); counting per operation gives a
// chunk of n lines its positions pos-n+1 .. pos without reserving n values of a sequence.
//
// The read of the largest position must be a statement of its own, after the one that locks: in READ
// COMMITTED a statement that waits for a row lock re-reads the locked row but keeps its snapshot for
// everything else, so a subquery in the locking statement would not see the chunks the lock holder inserted.

// The statements of the log paths, each searching an index of log_chunks (TestLogStatementsUseIndexes).
const (
	// storedBeyondSQL ($1 op_seq, $2 the contiguous end, $3 the batch's highest seq): the largest position
	// the log holds, with the runs that start after the end and at or before $3 (one row with NULL runs when
	// there are none).
	storedBeyondSQL = `SELECT m.pos, r.first_seq, r.last_seq
		FROM (SELECT COALESCE(MAX(pos), 0) AS pos FROM log_chunks WHERE op_seq = $1) m
		LEFT JOIN LATERAL (SELECT first_seq, last_seq FROM log_chunks
			WHERE op_seq = $1 AND first_seq > $2 AND first_seq <= $3 AND first_seq > 0) r ON TRUE
		ORDER BY r.first_seq`
	// repeatsSQL ($1 op_seq, $2 hi, $3 lo): the chunks holding seqs lo..hi, from the one that holds lo (the
	// last to start at or before it) to hi.
	repeatsSQL = `SELECT pos, n, lines FROM log_chunks WHERE op_seq = $1 AND first_seq > 0 AND first_seq <= $2
		AND first_seq >= (SELECT MAX(first_seq) FROM log_chunks WHERE op_seq = $1 AND first_seq > 0 AND first_seq <= $3)
		ORDER BY first_seq`
	// endSQL ($1 op_seq, $2 the contiguous end before the append): the new contiguous end, walking over the
	// runs that follow it, recorded when it moved, and whether runs lie beyond it.
	// (The walk's step is a scalar subquery, so each step is one look-up in log_chunks_seq: as a join the
	// planner may hash all of the operation's chunks at every step.)
	endSQL = `WITH RECURSIVE w (last) AS (
			SELECT $2::bigint
			UNION ALL
			SELECT next FROM (SELECT (SELECT c.last_seq FROM log_chunks c
				WHERE c.op_seq = $1 AND c.first_seq = w.last + 1 AND c.first_seq > 0) AS next FROM w) step
			WHERE next IS NOT NULL),
		e AS (SELECT MAX(last) AS last FROM w),
		u AS (UPDATE operations SET last_seq = e.last FROM e WHERE seq = $1 AND last_seq <> e.last)
		SELECT e.last, EXISTS (SELECT 1 FROM log_chunks WHERE op_seq = $1 AND first_seq > e.last AND first_seq > 0) FROM e`
	// logsSQL ($1 operation id, $2 after, $3 how many chunks): the chunks holding lines after position $2.
	logsSQL = `SELECT pos, n, lines FROM log_chunks
		WHERE op_seq = (SELECT seq FROM operations WHERE id = $1) AND pos > $2 ORDER BY pos LIMIT $3`
)

// logRow is what an append reads of its operation under the row lock.
type logRow struct {
	seq, lastSeq int64
	cut          store.LogCut
}

// lockLog locks the row of the operation ref names (FOR NO KEY UPDATE: held until the transaction ends) and
// checks that ref names its live lease, like held (leases.go), reading only what an append needs: appends are
// the busiest writes.
func lockLog(ctx context.Context, tx pgx.Tx, ref store.LeaseRef) (logRow, error) {
	var o logRow
	var h store.Held
	var expires *int64
	var worker, lease *string
	err := tx.QueryRow(ctx, `SELECT seq, state, worker_id, lease_id, lease_expires_at, last_seq,
			log_limit, log_bytes, log_head_seq, log_dropped_lines, log_dropped_bytes
		FROM operations WHERE id = $1 FOR NO KEY UPDATE`, ref.OperationID).
		Scan(&o.seq, &h.State, &worker, &lease, &expires, &o.lastSeq,
			&o.cut.Limit, &o.cut.Bytes, &o.cut.HeadSeq, &o.cut.DroppedLines, &o.cut.DroppedBytes)
	if err != nil {
		return o, readErr(err, "operation %s", ref.OperationID)
	}
	h.ID = ref.OperationID
	if worker != nil {
		h.WorkerID = *worker
	}
	if lease != nil {
		h.LeaseID = *lease
	}
	if expires != nil {
		h.LeaseExpiresAt = fromNanos(*expires)
	}
	return o, store.CheckLease(h, ref)
}

// AppendLogs stores lines of a leased operation: lines with seq >= 1 once per (operation, seq), seq 0 lines
// as they come, all in batch order; then it advances the operation's contiguous last_seq and keeps the log
// within its limit (loglimit.go). The steps are the SQLite driver's (see its AppendLogs), in one transaction
// that holds the operation's row lock throughout. An in-order batch costs five round trips: the lock, what is
// stored, the inserts and the contiguous end together (a pipelined batch), and the commit.
func (s *Store) AppendLogs(ctx context.Context, ref store.LeaseRef, lines []api.LogLine) (api.AppendLogsResponse, error) {
	var resp api.AppendLogsResponse
	err := s.tx(ctx, func(tx pgx.Tx) error {
		resp = api.AppendLogsResponse{}
		o, err := lockLog(ctx, tx, ref)
		if err != nil {
			return err
		}
		var hi int64
		for _, l := range lines {
			hi = max(hi, l.Seq)
		}
		pos, stored, err := storedBeyond(ctx, tx, o.seq, o.lastSeq, hi)
		if err != nil {
			return err
		}
		if err := checkRepeats(ctx, tx, o.seq, lines, o.lastSeq, stored); err != nil {
			return err
		}
		var batch pgx.Batch
		var added int64
		for _, c := range store.SplitChunks(store.CutChunks(lines, o.lastSeq, stored), store.PieceBytes(o.cut.Limit)) {
			pos += int64(len(c.Lines))
			data := store.EncodeChunk(c.Lines)
			batch.Queue(`INSERT INTO log_chunks (op_seq, pos, first_seq, last_seq, n, lines) VALUES ($1, $2, $3, $4, $5, $6)`,
				o.seq, pos, c.Run.First, c.Run.Last, len(c.Lines), data)
			added += int64(len(data))
			resp.Stored += len(c.Lines)
			for _, l := range c.Lines {
				resp.StoredBytes += int64(len(l.Text))
			}
		}
		// The contiguous end walks over the runs that follow it, one index look-up per run, and is recorded
		// when it moved. Whether runs lie beyond it does not depend on the cut after this: the cut drops only
		// lines at or before the end.
		batch.Queue(endSQL, o.seq, o.lastSeq)
		results := tx.SendBatch(ctx, &batch)
		for range batch.Len() - 1 {
			if _, err := results.Exec(); err != nil {
				results.Close()
				return fmt.Errorf("storing %d lines: %w", resp.Stored, err)
			}
		}
		if err := results.QueryRow().Scan(&resp.LastSeq, &resp.Gap); err != nil {
			results.Close()
			return fmt.Errorf("finding the contiguous end: %w", err)
		}
		if err := results.Close(); err != nil {
			return fmt.Errorf("storing %d lines: %w", resp.Stored, err)
		}
		return cutLog(ctx, tx, o.seq, o.cut, added, resp.LastSeq, ref.Now)
	})
	if err != nil {
		return api.AppendLogsResponse{}, fmt.Errorf("appending logs of operation %s: %w", ref.OperationID, err)
	}
	return resp, nil
}

// storedBeyond returns the largest position an operation's log holds and the runs of numbered lines it
// holds that start after its contiguous end last and at or before hi, in order. It must run after lockLog,
// as a statement of its own (see above).
func storedBeyond(ctx context.Context, tx pgx.Tx, opSeq, last, hi int64) (int64, []store.SeqRun, error) {
	rows, err := tx.Query(ctx, storedBeyondSQL, opSeq, last, hi)
	if err != nil {
		return 0, nil, fmt.Errorf("reading what the log holds beyond %d: %w", last, err)
	}
	var pos int64
	var runs []store.SeqRun
	var first, end *int64
	if _, err := pgx.ForEachRow(rows, []any{&pos, &first, &end}, func() error {
		if first != nil {
			runs = append(runs, store.SeqRun{First: *first, Last: *end})
		}
		return nil
	}); err != nil {
		return 0, nil, fmt.Errorf("reading what the log holds beyond %d: %w", last, err)
	}
	return pos, runs, nil
}

// checkRepeats compares the lines of the batch whose seq is stored already with the stored ones, and refuses
// the batch with a *store.LogConflictError at the first whose stream or text differs (store.HeldLines).
func checkRepeats(ctx context.Context, tx pgx.Tx, opSeq int64, lines []api.LogLine, last int64, stored []store.SeqRun) error {
	lo, hi := store.RepeatedSeqs(lines, last, stored)
	if lo == 0 {
		return nil
	}
	// The runs holding lo..hi: from the one that holds lo (the last to start at or before it) to hi.
	rows, err := tx.Query(ctx, repeatsSQL, opSeq, hi, lo)
	if err != nil {
		return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
	}
	held := store.HeldLines{}
	var pos, n int64
	var data []byte
	if _, err := pgx.ForEachRow(rows, []any{&pos, &n, &data}, func() error {
		return held.AddChunk(string(data), pos, n, lo, hi)
	}); err != nil {
		return fmt.Errorf("reading the lines stored under seqs %d..%d: %w", lo, hi, err)
	}
	return held.Conflict(lines)
}

// logPage is how many chunks one read of Logs fetches: pgx reads a result to its end, so a read stops at a
// page and the next one resumes after it, instead of fetching a whole log to return its first lines.
const logPage = 16

// Logs returns up to limit lines of an operation after position after.
func (s *Store) Logs(ctx context.Context, id string, after int64, limit int) ([]api.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	lines := []api.LogLine{}
	for len(lines) < limit {
		rows, err := s.pool.Query(ctx, logsSQL, id, after, logPage)
		if err != nil {
			return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
		}
		chunks := 0
		for rows.Next() {
			var pos, n int64
			var data []byte
			if err := rows.Scan(&pos, &n, &data); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
			}
			chunks++
			if lines, err = store.DecodeChunk(lines, string(data), pos, n, after, limit); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
			}
			after = pos
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("reading logs of operation %s: %w", id, err)
		}
		if chunks < logPage {
			break
		}
	}
	return lines, nil
}
