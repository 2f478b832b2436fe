package postgres

import (
	"bytes"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
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
	s := servers(t, 1, 0)[0]
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

// TestEndsScrubSensitiveValues: every way an operation ends schedules the vacuum, and once it ran no row
// version of operations holds the operation's sensitive value, pod token hash or sealing key.
func TestEndsScrubSensitiveValues(t *testing.T) {
	t.Parallel()
	const secret, tokenHash = "hunter2-erase-me", "pod-token-hash-erase-me"
	key := bytes.Repeat([]byte("sealing-key-"), 3)
	spec := api.OperationSpec{Pool: "p", Script: "echo hi", Variables: []api.Variable{{Name: "PASSWORD", Value: secret, Sensitive: true}}}
	// leased enqueues op-1, leases it with a pod token and a key, and appends lines (each a row version).
	leased := func(t *testing.T, s *Store) store.LeaseRef {
		if _, err := s.CreateOperation(t.Context(), store.NewOperation{ID: "op-1", Spec: spec, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		l, err := s.Claim(t.Context(), store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: "lease-1", Now: now,
			ExpiresAt: now.Add(time.Minute), PodTokenHash: tokenHash, SealingKey: key})
		if err != nil || l == nil {
			t.Fatalf("Claim = %v, %v", l, err)
		}
		ref := store.LeaseRef{OperationID: "op-1", LeaseID: "lease-1", WorkerID: "w", Now: now}
		for seq := int64(1); seq <= 3; seq++ {
			if _, err := s.AppendLogs(t.Context(), ref, []api.LogLine{{Seq: seq, Time: now, Stream: api.StreamStdout, Text: "x"}}); err != nil {
				t.Fatal(err)
			}
		}
		return ref
	}
	for _, tt := range []struct {
		name string
		end  func(t *testing.T, s *Store) error
	}{
		{"finish", func(t *testing.T, s *Store) error {
			_, _, err := s.Finish(t.Context(), leased(t, s), store.Result{State: api.StateFailed, ExitCode: new(int), LastSeq: 3})
			return err
		}},
		{"cancel while queued", func(t *testing.T, s *Store) error {
			if _, err := s.CreateOperation(t.Context(), store.NewOperation{ID: "op-1", Spec: spec, CreatedAt: now}); err != nil {
				t.Fatal(err)
			}
			_, _, err := s.Cancel(t.Context(), "op-1", now)
			return err
		}},
		{"lease expiry", func(t *testing.T, s *Store) error {
			leased(t, s)
			_, err := s.ExpireLeases(t.Context(), now.Add(time.Hour))
			return err
		}},
		{"worker removed", func(t *testing.T, s *Store) error {
			leased(t, s)
			_, err := s.RemoveWorker(t.Context(), "w", now)
			return err
		}},
		{"deployment cancelled", func(t *testing.T, s *Store) error {
			d := store.NewDeployment{ID: "dep-1", Name: "release", CreatedAt: now, Steps: []store.NewOperation{
				{ID: "op-1", Spec: spec, CreatedAt: now}, {ID: "op-2", Spec: spec, CreatedAt: now}}}
			if _, err := s.CreateDeployment(t.Context(), d); err != nil {
				t.Fatal(err)
			}
			_, _, err := s.CancelDeployment(t.Context(), "dep-1", now)
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := servers(t, 1, 10, "w")[0]
			done := make(chan struct{}, 2)
			s.scrub.done = func() { done <- struct{}{} }
			if err := tt.end(t, s); err != nil {
				t.Fatal(err)
			}
			s.closeScrubber() // runs the scheduled vacuum now, and waits for it
			if len(done) == 0 {
				t.Fatal("the end scheduled no vacuum")
			}
			for what, v := range map[string]string{"sensitive value": secret, "pod token hash": tokenHash, "sealing key": string(key)} {
				if n := rowVersionsHolding(t, s, v); n != 0 {
					t.Errorf("%d row versions of operations still hold the %s", n, what)
				}
			}
			// The one index on a sensitive column. (On a large table VACUUM may leave the index entries of a few
			// dead rows for a later vacuum: erase.go says so; this table is one page.)
			var n int
			if err := s.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM generate_series(1, pg_relation_size('operations_pod_token') /
				current_setting('block_size')::int - 1) AS b, bt_page_items('operations_pod_token', b::int)
				WHERE position(convert_to($1, 'UTF8') IN decode(replace(data, ' ', ''), 'hex')) > 0`, tokenHash).Scan(&n); err != nil || n != 0 {
				t.Errorf("%d entries of the index operations_pod_token still hold the pod token hash (%v)", n, err)
			}
		})
	}
}
