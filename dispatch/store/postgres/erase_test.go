package postgres

import (
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// rowVersionsHolding counts the row versions of operations, live and dead, whose bytes contain secret: what
// pageinspect (and any tool that reads a table's rows from its pages) would find. It skips the test when the
// database does not allow pageinspect (a server from $OCTO_TEST_POSTGRES without superuser rights).
func rowVersionsHolding(t *testing.T, s *Store, secret string) int {
	t.Helper()
	if _, err := s.pool.Exec(t.Context(), `CREATE EXTENSION IF NOT EXISTS pageinspect`); err != nil {
		t.Skipf("pageinspect is not available on this server (%v): this test needs a superuser", err)
	}
	var n int
	err := s.pool.QueryRow(t.Context(), `SELECT COUNT(*)
		FROM generate_series(0, pg_relation_size('operations') / current_setting('block_size')::int - 1) AS b,
			heap_page_items(get_raw_page('operations', b::int))
		WHERE t_data IS NOT NULL AND position(convert_to($1, 'UTF8') IN t_data) > 0`, secret).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestScrubRemovesOldRowVersions: the row versions a live operation leaves behind (each log append writes
// one, with its sensitive values) hold the values after the end erased them from the live row; the vacuum
// that scrubSoon schedules removes them. (What it cannot remove, the bytes in the pages' free space and the
// WAL, erase.go says.)
func TestScrubRemovesOldRowVersions(t *testing.T) {
	t.Parallel()
	s := openServers(t, 1)[0]
	const secret = "s3cret-value-0123456789"
	ref := leasedRow(t, s, "op-secret", `{"TOKEN":"`+secret+`"}`, 0)
	for seq := int64(1); seq <= 5; seq++ {
		if _, err := s.AppendLogs(t.Context(), ref, []api.LogLine{{Seq: seq, Time: ref.Now, Stream: api.StreamStdout, Text: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	// What an operation's end does to the row (pg-core's Finish and the other ends).
	if _, err := s.pool.Exec(t.Context(), `UPDATE operations SET state = 'succeeded', secrets = NULL, sealing_key = NULL,
		pod_token_hash = NULL WHERE id = $1`, ref.OperationID); err != nil {
		t.Fatal(err)
	}
	if n := rowVersionsHolding(t, s, secret); n == 0 {
		t.Fatal("no old row version holds the value before the vacuum: this test cannot see what it checks")
	}
	done := make(chan struct{}, 1)
	s.scrub.done = func() { done <- struct{}{} }
	s.scrubSoon()
	s.scrubSoon() // batched with the first
	<-done
	if n := rowVersionsHolding(t, s, secret); n != 0 {
		t.Errorf("%d row versions of operations still hold the erased value after the vacuum", n)
	}
	s.closeScrubber()
	if len(done) != 0 {
		t.Errorf("two scrubSoon calls within scrubDelay ran %d vacuums, want 1", 1+len(done))
	}
}
