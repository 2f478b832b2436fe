package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/internal/sqlitedsn"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// leasedOp creates an operation in s and leases it to worker "w".
func leasedOp(t *testing.T, s *Store, id string) store.LeaseRef {
	t.Helper()
	ctx := t.Context()
	if err := s.CreatePool(ctx, api.Pool{Name: "p-" + id, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOperation(ctx, store.NewOperation{ID: id, Spec: api.OperationSpec{Pool: "p-" + id, Script: "x"}, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ensureWorker(t, s, "w")
	l, err := s.Claim(ctx, store.ClaimParams{WorkerID: "w", Pools: []string{"p-" + id}, LeaseID: "l-" + id, Now: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil || l == nil || l.Operation.ID != id {
		t.Fatalf("claiming %s: %+v, %v", id, l, err)
	}
	return store.LeaseRef{OperationID: id, LeaseID: l.LeaseID, WorkerID: "w", Now: now}
}

// ensureWorker registers worker id in s unless it exists: only an existing worker can lease.
func ensureWorker(tb testing.TB, s *Store, id string) {
	tb.Helper()
	err := s.CreateWorker(tb.Context(), store.Worker{Worker: api.Worker{ID: id, Name: id, Pools: []string{}, Version: "1", Capacity: 100, Healthy: true,
		RegisteredAt: time.Now(), LastHeartbeat: time.Now()}, TokenHash: []byte("hash-" + id), TokenID: "t"})
	if err != nil && !errors.Is(err, store.ErrExists) {
		tb.Fatalf("registering worker %s: %v", id, err)
	}
}

func textOf(seq int64) string { return fmt.Sprintf("line %d: \"quoted\" \\ tab\t né \x00 end", seq) }

// TestAppendLogsStoresABatchAsOneChunk guards the cost of the append path: an in-order batch is one row, and
// a batch that overlaps what is stored keeps only its new lines, still as one row.
func TestAppendLogsStoresABatchAsOneChunk(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ref := leasedOp(t, s, "op")
	batch := func(from, to int64) []api.LogLine {
		var ls []api.LogLine
		for seq := from; seq <= to; seq++ {
			ls = append(ls, api.LogLine{Seq: seq, Time: time.Now(), Stream: api.StreamStdout, Text: textOf(seq)})
		}
		return ls
	}
	for _, b := range [][2]int64{{1, 5000}, {4001, 9000}} {
		if _, err := s.AppendLogs(t.Context(), ref, batch(b[0], b[1])); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.r.Query(`SELECT first_seq, last_seq, n FROM log_chunks ORDER BY pos`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got [][3]int64
	for rows.Next() {
		var c [3]int64
		if err := rows.Scan(&c[0], &c[1], &c[2]); err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	if diff := cmp.Diff([][3]int64{{1, 5000, 5000}, {5001, 9000, 4000}}, got); diff != "" {
		t.Errorf("chunks (first_seq, last_seq, n) (-want +got):\n%s", diff)
	}
}

// TestLogQueriesUseIndexes: the append path's look-ups and the follow read search an index, so their cost
// does not grow with the number of stored chunks.
func TestLogQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	for _, tc := range []struct{ query, index string }{
		{`SELECT last_seq FROM log_chunks WHERE op_seq = 1 AND first_seq = 5 AND first_seq > 0`, "log_chunks_seq"},
		{`SELECT COUNT(*) FROM (SELECT 1 FROM log_chunks WHERE op_seq = 1 AND first_seq > 5 AND first_seq > 0 LIMIT 1)`, "log_chunks_seq"},
		{`SELECT first_seq, last_seq FROM log_chunks WHERE op_seq = 1 AND first_seq > 5 AND first_seq <= 9 AND first_seq > 0 ORDER BY first_seq`, "log_chunks_seq"},
		{`SELECT pos, n, lines FROM log_chunks WHERE op_seq = (SELECT seq FROM operations WHERE id = 'x') AND pos > 5 ORDER BY pos`, "log_chunks_op"},
		// checkRepeats: the runs holding lo..hi of a batch that overlaps what is stored.
		{`SELECT pos, n, lines FROM log_chunks WHERE op_seq = 1 AND first_seq > 0 AND first_seq <= 9
			AND first_seq >= (SELECT MAX(first_seq) FROM log_chunks WHERE op_seq = 1 AND first_seq > 0 AND first_seq <= 5) ORDER BY first_seq`, "log_chunks_seq"},
	} {
		joined := queryPlan(t, s, tc.query)
		if !strings.Contains(joined, "USING INDEX "+tc.index) && !strings.Contains(joined, "USING COVERING INDEX "+tc.index) || strings.Contains(joined, "TEMP B-TREE") {
			t.Errorf("%s\ndoes not search %s:\n%s", tc.query, tc.index, joined)
		}
	}
}

// TestMigrationKeepsStoredLines opens a database written by the first schema (one row per line) and checks
// that every line comes back unchanged at its old position, and that appending continues from there.
func TestMigrationKeepsStoredLines(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dispatch.db")
	db, err := sql.Open("sqlite", sqlitedsn.DSN(path, true))
	if err != nil {
		t.Fatal(err)
	}
	v1, err := migrations.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	exp := now.Add(time.Hour).UnixNano()
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
		string(v1),
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0)`,
		`INSERT INTO pools (name, created_at) VALUES ('p', 0)`,
		fmt.Sprintf(`INSERT INTO operations (seq, id, pool, body, ready, state, created_at, worker_id, lease_id, lease_expires_at, last_seq)
			VALUES (1, 'a', 'p', '{}', 1, 'running', 0, 'w', 'la', %d, 2), (2, 'b', 'p', '{}', 1, 'running', 0, 'w', 'lb', %d, 1)`, exp, exp),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	// Lines of both operations interleaved; a, line 4 arrived before 3.
	old := []struct {
		op   int64
		l    api.LogLine
		opID string
	}{
		{1, api.LogLine{Seq: 1, Stream: "stdout", Text: textOf(1)}, "a"},
		{2, api.LogLine{Seq: 1, Stream: "stderr", Text: ""}, "b"},
		{1, api.LogLine{Seq: 0, Stream: "system", Text: "waiting for capacity\nsecond line"}, "a"},
		{1, api.LogLine{Seq: 2, Stream: "stdout", Text: "ünïcödé ✓"}, "a"},
		{1, api.LogLine{Seq: 4, Stream: "stdout", Text: textOf(4)}, "a"},
	}
	want := map[string][]api.LogLine{}
	var lastOld int64
	for i, o := range old {
		l := o.l
		l.Pos = int64(10 + 3*i) // positions with holes, as other operations' lines leave them
		lastOld = l.Pos
		l.Time = time.Unix(0, now.UnixNano()+int64(i)).UTC()
		if _, err := db.Exec(`INSERT INTO log_lines (pos, op_seq, seq, time, stream, text) VALUES (?, ?, ?, ?, ?, ?)`,
			l.Pos, o.op, l.Seq, l.Time.UnixNano(), l.Stream, l.Text); err != nil {
			t.Fatal(err)
		}
		want[o.opID] = append(want[o.opID], l)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("migrating: %v", err)
	}
	defer s.Close()
	for id, w := range want {
		got, err := s.Logs(t.Context(), id, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("operation %s after the migration (-want +got):\n%s", id, diff)
		}
	}
	// Appending to a: 2 and 4 are held already, 3 fills the hole, 5 is new.
	ref := store.LeaseRef{OperationID: "a", LeaseID: "la", WorkerID: "w", Now: now}
	var batch []api.LogLine
	for _, seq := range []int64{2, 3, 4, 5} {
		text := textOf(seq)
		if seq == 2 {
			text = "ünïcödé ✓" // a line held already is re-sent as it is (another text would be a conflict)
		}
		batch = append(batch, api.LogLine{Seq: seq, Time: now.UTC(), Stream: "stdout", Text: text})
	}
	resp, err := s.AppendLogs(t.Context(), ref, batch)
	if err != nil || resp.LastSeq != 5 || resp.Gap {
		t.Fatalf("AppendLogs after the migration = %+v, %v; want last_seq 5", resp, err)
	}
	got, err := s.Logs(t.Context(), "a", want["a"][len(want["a"])-1].Pos, 100)
	if err != nil || len(got) != 2 || got[0].Seq != 3 || got[1].Seq != 5 || got[0].Pos <= lastOld {
		t.Errorf("new lines after the migration = %+v, %v; want 3 and 5 after every old position", got, err)
	}
	var tables int
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'log_lines'`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("log_lines still exists (%d, %v)", tables, err)
	}
}
