package postgres

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// TestDeleteFinishedGivesSpaceBack: after deleting the whole history, the vacuum DeleteFinished runs leaves
// the tables that held it (heap and TOAST; indexes keep their pages for reuse) at a fraction of their size,
// and no log chunk behind.
func TestDeleteFinishedGivesSpaceBack(t *testing.T) {
	t.Parallel()
	s := servers(t, 1, 0)[0]
	now := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100 {
		ref := leasedRow(t, s, fmt.Sprintf("op-%03d", i), "", 0)
		var lines []api.LogLine
		for seq := int64(1); seq <= 100; seq++ {
			lines = append(lines, api.LogLine{Seq: seq, Time: now, Stream: api.StreamStdout, Text: fmt.Sprintf("%x", rng.Uint64()) + strings.Repeat(" ", 100) + fmt.Sprintf("%x", rng.Uint64())})
		}
		if _, err := s.AppendLogs(t.Context(), ref, lines); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(t.Context(), `UPDATE operations SET state = 'succeeded', finished_at = $1`, nanos(now)); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		var n int64
		if err := s.pool.QueryRow(t.Context(), `SELECT pg_table_size('log_chunks') + pg_table_size('operations')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	full := size()
	if n, err := s.DeleteFinished(t.Context(), now.Add(time.Second), 30); err != nil || n != 100 {
		t.Fatalf("DeleteFinished = %d, %v; want 100", n, err)
	}
	after := size()
	if after > full/4 {
		t.Errorf("log_chunks and operations take %d bytes after deleting everything, %d before; want below a quarter", after, full)
	}
	var chunks int
	if err := s.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM log_chunks`).Scan(&chunks); err != nil || chunks != 0 {
		t.Errorf("%d log chunks left after deleting everything (%v)", chunks, err)
	}
	t.Logf("log_chunks and operations: %d bytes with 100 operations of 100 lines, %d after deleting them", full, after)
}

// TestDeleteFinishedOnSeveralServers: three servers run retention at once over the same history, in small
// batches; each operation is deleted, and counted, once.
func TestDeleteFinishedOnSeveralServers(t *testing.T) {
	t.Parallel()
	servers := servers(t, 3, 0)
	now := time.Now()
	const ops = 300
	for i := range ops {
		leasedRow(t, servers[0], fmt.Sprintf("op-%03d", i), "", 0)
	}
	if _, err := servers[0].pool.Exec(t.Context(), `UPDATE operations SET state = 'succeeded', finished_at = $1`, nanos(now)); err != nil {
		t.Fatal(err)
	}
	counts := make(chan int, len(servers))
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			n, err := s.DeleteFinished(t.Context(), now.Add(time.Second), 3)
			counts <- n
			errs <- err
		}()
	}
	total := 0
	for range servers {
		total += <-counts
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var left int
	if err := servers[1].pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM operations`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if total != ops || left != 0 {
		t.Errorf("the servers' retention counted %d deletions and left %d operations; want %d and 0", total, left, ops)
	}
}
