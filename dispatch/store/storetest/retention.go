package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// logged claims the oldest claimable operation for worker w, stores lines 1..n of it and returns the lease.
func (b *bundle) logged(t *testing.T, n int) *api.Lease {
	t.Helper()
	l := b.mustClaim(t, "w")
	var lines []api.LogLine
	for i := 1; i <= n; i++ {
		lines = append(lines, api.LogLine{Seq: int64(i), Time: b.now, Stream: api.StreamStdout, Text: fmt.Sprintf("line %d of %s", i, l.Operation.ID)})
	}
	if _, err := b.s.AppendLogs(b.ctx, ref(l, "w", b.now), lines); err != nil {
		t.Fatalf("AppendLogs: %v", err)
	}
	return l
}

// gone checks that operations ids are deleted, logs included.
func (b *bundle) gone(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if op, err := b.s.Operation(b.ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Operation(%s) after retention = %s, %v; want ErrNotFound", id, op.State, err)
		}
		if lines, err := b.s.Logs(b.ctx, id, 0, 100); err != nil || len(lines) > 0 {
			t.Errorf("Logs(%s) after retention = %d lines, %v; want none", id, len(lines), err)
		}
	}
}

// kept checks that operations ids are still there, with n log lines each.
func (b *bundle) kept(t *testing.T, n int, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := b.s.Operation(b.ctx, id); err != nil {
			t.Errorf("Operation(%s) after retention: %v; want it kept", id, err)
		}
		if lines, err := b.s.Logs(b.ctx, id, 0, 100); err != nil || len(lines) != n {
			t.Errorf("Logs(%s) after retention = %d lines, %v; want %d", id, len(lines), err, n)
		}
	}
}

func stepIDs(d api.Deployment) []string {
	var ids []string
	for _, op := range d.Operations {
		ids = append(ids, op.ID)
	}
	return ids
}

// testRetention: DeleteFinished deletes exactly what ended before the cutoff (see the rules in package store).
func testRetention(t *testing.T, b *bundle) {
	start := b.now
	cutoff := start.Add(time.Hour)
	b.pool(t, "idle") // nobody claims from it: its operations stay queued

	// Ended before the cutoff: deleted.
	b.enqueue(t, api.OperationSpec{})
	succeeded := b.logged(t, 3)
	b.finish(t, succeeded, "w", api.StateSucceeded, 0)
	cancelled := b.enqueue(t, api.OperationSpec{Pool: "idle"})
	if _, _, err := b.s.Cancel(b.ctx, cancelled.ID, start); err != nil {
		t.Fatal(err)
	}
	oldDep := b.deploy(t, "build", "release")
	for range oldDep.Operations {
		b.finish(t, b.logged(t, 2), "w", api.StateSucceeded, 0)
	}

	// Not ended, however old: kept.
	queued := b.enqueue(t, api.OperationSpec{Pool: "idle"})
	b.enqueue(t, api.OperationSpec{})
	running := b.logged(t, 1)
	// Ended at the cutoff and after it: kept.
	b.now = cutoff
	b.enqueue(t, api.OperationSpec{})
	atCutoff := b.logged(t, 1)
	b.finish(t, atCutoff, "w", api.StateFailed, 1)
	b.now = cutoff.Add(time.Minute)
	b.enqueue(t, api.OperationSpec{})
	later := b.logged(t, 1)
	b.finish(t, later, "w", api.StateSucceeded, 0)
	lateDep := b.deploy(t, "build")
	b.finish(t, b.logged(t, 1), "w", api.StateSucceeded, 0)
	// A deployment whose first step ended long before the cutoff but whose second has not: kept whole.
	b.now = start
	liveDep := b.deploy(t, "build", "release")
	b.finish(t, b.logged(t, 1), "w", api.StateSucceeded, 0)

	n, err := b.s.DeleteFinished(b.ctx, cutoff, 100)
	if err != nil {
		t.Fatalf("DeleteFinished: %v", err)
	}
	if want := 2 + len(oldDep.Operations); n != want {
		t.Errorf("DeleteFinished deleted %d operations, want %d", n, want)
	}
	b.gone(t, succeeded.Operation.ID, cancelled.ID)
	b.gone(t, stepIDs(oldDep)...)
	if _, err := b.s.Deployment(b.ctx, oldDep.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Deployment(%s) after retention: %v, want ErrNotFound", oldDep.ID, err)
	}
	b.kept(t, 0, queued.ID)
	b.kept(t, 1, running.Operation.ID, atCutoff.Operation.ID, later.Operation.ID)
	for _, d := range []api.Deployment{lateDep, liveDep} {
		got, err := b.s.Deployment(b.ctx, d.ID)
		if err != nil || len(got.Operations) != len(d.Operations) {
			t.Errorf("Deployment(%s) after retention = %d steps, %v; want all %d kept", d.ID, len(got.Operations), err, len(d.Operations))
		}
	}
	if ops, err := b.s.ListOperations(b.ctx, store.OperationFilter{}); err != nil || len(ops) != 7 {
		t.Errorf("ListOperations after retention = %d operations, %v; want the 7 kept", len(ops), err)
	}
	if pools, err := b.s.ListPools(b.ctx); err != nil || len(pools) != 2 {
		t.Errorf("ListPools after retention = %v, %v; want pools kept", pools, err)
	}
	if workers, err := b.s.ListWorkers(b.ctx); err != nil || len(workers) != 1 {
		t.Errorf("ListWorkers after retention = %v, %v; want workers kept", workers, err)
	}
	if n, err := b.s.DeleteFinished(b.ctx, cutoff, 100); err != nil || n != 0 {
		t.Errorf("DeleteFinished again = %d, %v; want 0, nil", n, err)
	}
	if _, err := b.s.DeleteFinished(b.ctx, cutoff, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("DeleteFinished with batch 0: %v, want ErrInvalid", err)
	}
}

// testRetentionBatches: history larger than a batch is deleted whole, a deployment with more steps than a batch
// included, and nothing of it shows up again (an operation enqueued afterwards has no log of a deleted one).
func testRetentionBatches(t *testing.T, b *bundle) {
	const batch = 3
	var ids []string
	for range 2*batch + 1 {
		b.enqueue(t, api.OperationSpec{})
		l := b.logged(t, 2)
		b.finish(t, l, "w", api.StateSucceeded, 0)
		ids = append(ids, l.Operation.ID)
	}
	var deps []api.Deployment
	for _, steps := range [][]string{{"a"}, {"a", "b", "c", "d", "e"}, {"a", "b"}} {
		d := b.deploy(t, steps...)
		for range steps {
			b.finish(t, b.logged(t, 2), "w", api.StateSucceeded, 0)
		}
		deps = append(deps, d)
		ids = append(ids, stepIDs(d)...)
	}
	n, err := b.s.DeleteFinished(b.ctx, b.now.Add(time.Second), batch)
	if err != nil || n != len(ids) {
		t.Fatalf("DeleteFinished = %d, %v; want all %d operations deleted", n, err, len(ids))
	}
	b.gone(t, ids...)
	for _, d := range deps {
		if _, err := b.s.Deployment(b.ctx, d.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Deployment(%s) after retention: %v, want ErrNotFound", d.ID, err)
		}
	}
	fresh := b.enqueue(t, api.OperationSpec{})
	b.kept(t, 0, fresh.ID)
}
