package postgres

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// TestLogStatementsUseIndexes guards the cost of the log paths: with many operations' logs stored, each
// statement an append or a follower runs searches log_chunks through its primary key (op_seq, pos) or the
// seq index, never scans the table, and looks runs up by seq in the seq index (a search of the primary key
// filtered by seq would read every chunk of the operation). Both plans PostgreSQL may choose for a prepared
// statement (custom and generic) are checked.
func TestLogStatementsUseIndexes(t *testing.T) {
	t.Parallel()
	s := servers(t, 1, 0)[0]
	ctx := t.Context()
	var ref = leasedRow(t, s, "op-000", "", 0)
	for i := range 40 {
		if i > 0 {
			ref = leasedRow(t, s, fmt.Sprintf("op-%03d", i), "", 0)
		}
		for b := range 50 {
			seq := int64(b*2 + 1)
			lines := []api.LogLine{{Seq: seq, Time: time.Unix(0, 0), Stream: api.StreamStdout, Text: "a"}, {Seq: seq + 1, Time: time.Unix(0, 0), Stream: api.StreamStdout, Text: "b"}}
			if _, err := s.AppendLogs(ctx, ref, lines); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE log_chunks; ANALYZE operations`); err != nil {
		t.Fatal(err)
	}
	var opSeq int64
	if err := s.pool.QueryRow(ctx, `SELECT seq FROM operations WHERE id = 'op-007'`).Scan(&opSeq); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		for _, q := range []struct {
			name  string
			sql   string
			args  []any
			index string
		}{
			{"storedBeyond", storedBeyondSQL, []any{opSeq, int64(60), int64(80)}, "log_chunks_seq"},
			{"repeats", repeatsSQL, []any{opSeq, int64(60), int64(40)}, "log_chunks_seq"},
			{"end", endSQL, []any{opSeq, int64(60)}, "log_chunks_seq"},
			{"logs", logsSQL, []any{"op-007", int64(30), logPage}, "log_chunks_pkey"},
		} {
			rows, err := conn.Query(ctx, `EXPLAIN (COSTS OFF) `+q.sql, q.args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			joined := strings.Join(plan, "\n")
			if strings.Contains(joined, "Seq Scan on log_chunks") || strings.Contains(joined, "Index Cond: (op_seq = ") ||
				!strings.Contains(joined, q.index) {
				t.Errorf("%s (%s) scans log_chunks, or all of an operation's chunks, instead of searching %s:\n%s", q.name, mode, q.index, joined)
			}
		}
		conn.Release()
	}
}
