package storetest

import (
	"bytes"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func testWorkers(t *testing.T, b *bundle) {
	b.pool(t, "q")
	w := store.Worker{Worker: api.Worker{ID: "w1", Name: "one", Pools: []string{"p", "q"}, Version: "1.0",
		Capabilities: []string{"kubernetes-job"}, Capacity: 4, Healthy: true, RegisteredAt: b.now, LastHeartbeat: b.now},
		TokenHash: []byte("wh1"), TokenID: "tok-1"}
	if err := b.s.CreateWorker(b.ctx, w); err != nil {
		t.Fatal(err)
	}
	w2 := w
	w2.ID, w2.TokenHash, w2.Pools = "w2", []byte("wh2"), []string{"q"}
	if err := b.s.CreateWorker(b.ctx, w2); err != nil {
		t.Fatal(err)
	}
	got, err := b.s.WorkerByTokenHash(b.ctx, []byte("wh1"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, got); diff != "" {
		t.Errorf("WorkerByTokenHash (-want +got):\n%s", diff)
	}
	_, err = b.s.WorkerByTokenHash(b.ctx, []byte("zz"))
	wantErr(t, err, store.ErrNotFound)
	inP, err := b.s.PoolWorkers(b.ctx, "p")
	if err != nil || len(inP) != 1 || inP[0].ID != "w1" {
		t.Errorf("PoolWorkers(p) = %+v, %v", inP, err)
	}
	inQ, err := b.s.PoolWorkers(b.ctx, "q")
	if err != nil || len(inQ) != 2 {
		t.Errorf("PoolWorkers(q) = %d workers, %v; want 2", len(inQ), err)
	}
	all, err := b.s.ListWorkers(b.ctx)
	if err != nil || len(all) != 2 {
		t.Errorf("ListWorkers = %d, %v", len(all), err)
	}
	d, err := b.s.SetDrain(b.ctx, "w1", true)
	if err != nil || !d.DrainRequested {
		t.Errorf("SetDrain = %+v, %v", d, err)
	}
	_, err = b.s.SetDrain(b.ctx, "nope", true)
	wantErr(t, err, store.ErrNotFound)
	_, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "nope", Now: b.now})
	wantErr(t, err, store.ErrNotFound)
}

func testHeartbeat(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.registerWorker(t, "other")
	b.enqueue(t, api.OperationSpec{})
	b.enqueue(t, api.OperationSpec{})
	b.enqueue(t, api.OperationSpec{})
	listed := b.mustClaim(t, "w")
	unlisted := b.mustClaim(t, "w")
	theirs := b.mustClaim(t, "other")
	later := b.now.Add(50 * time.Second)
	hb, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: later, LeaseExpiresAt: later.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Version: "2.0", Capacity: 3, Capabilities: []string{"kubernetes-job"},
			Running: []string{listed.Operation.ID, theirs.Operation.ID, "op-unknown"}, Health: api.Health{OK: false, Message: "api slow"}, Draining: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{theirs.Operation.ID, "op-unknown"}
	sort.Strings(want)
	if diff := cmp.Diff(want, hb.Cancel); diff != "" {
		t.Errorf("Cancel lists operations the worker runs but does not hold (-want +got):\n%s", diff)
	}
	leases, err := b.s.Leases(b.ctx, "w", later)
	if err != nil || len(leases) != 2 {
		t.Fatalf("Leases = %+v, %v", leases, err)
	}
	for _, l := range leases {
		wantExp := b.now.Add(time.Minute)
		if l.Operation.ID == listed.Operation.ID {
			wantExp = later.Add(time.Minute)
		}
		if !l.ExpiresAt.Equal(wantExp) {
			t.Errorf("lease of %s expires %s, want %s (only listed leases are renewed)", l.Operation.ID, l.ExpiresAt, wantExp)
		}
	}
	if other, _ := b.s.Leases(b.ctx, "other", later); len(other) != 1 || !other[0].ExpiresAt.Equal(b.now.Add(time.Minute)) {
		t.Errorf("w's heartbeat renewed another worker's lease: %+v", other)
	}
	_ = unlisted
	ws, _ := b.s.ListWorkers(b.ctx)
	for _, w := range ws {
		if w.ID == "w" && (w.Version != "2.0" || w.Capacity != 3 || w.Running != 3 || w.Healthy || w.HealthMessage != "api slow" ||
			!w.Draining || !w.LastHeartbeat.Equal(later)) {
			t.Errorf("worker after heartbeat = %+v", w.Worker)
		}
	}
	if _, err := b.s.SetDrain(b.ctx, "w", true); err != nil {
		t.Fatal(err)
	}
	hb, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: later, LeaseExpiresAt: later.Add(time.Minute)})
	if err != nil || !hb.Drain {
		t.Errorf("heartbeat after a drain request = %+v, %v", hb, err)
	}
	// A lease that expired is not renewed by a late heartbeat: the worker is told to stop it.
	late := b.now.Add(5 * time.Minute)
	hb, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: late, LeaseExpiresAt: late.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Running: []string{listed.Operation.ID}}})
	if err != nil || !cmp.Equal(hb.Cancel, sorted(listed.Operation.ID, unlisted.Operation.ID)) {
		t.Errorf("late heartbeat = %+v, %v; want both expired leases cancelled", hb, err)
	}
}

func testRemoveWorker(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.registerWorker(t, "other")
	leased := b.enqueue(t, api.OperationSpec{Name: "leased", Variables: []api.Variable{{Name: "S", Value: "v", Sensitive: true}}})
	running := b.enqueue(t, api.OperationSpec{Name: "running"})
	done := b.enqueue(t, api.OperationSpec{Name: "done"})
	theirs := b.enqueue(t, api.OperationSpec{Name: "theirs"})
	lLeased, lRunning, lDone := b.mustClaim(t, "w"), b.mustClaim(t, "w"), b.mustClaim(t, "w")
	lTheirs := b.mustClaim(t, "other")
	if lLeased.Operation.ID != leased.ID || lRunning.Operation.ID != running.ID || lDone.Operation.ID != done.ID || lTheirs.Operation.ID != theirs.ID {
		t.Fatal("claims out of order")
	}
	if _, err := b.s.SetRunning(b.ctx, ref(lRunning, "w", b.now), "job created"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.s.Cancel(b.ctx, running.ID, b.now); err != nil {
		t.Fatal(err)
	}
	b.finish(t, lDone, "w", api.StateSucceeded, 0)
	queued := b.enqueue(t, api.OperationSpec{Name: "queued"})

	at := b.now.Add(time.Second)
	got, err := b.s.RemoveWorker(b.ctx, "w", at)
	if err != nil {
		t.Fatalf("RemoveWorker: %v", err)
	}
	if got.Worker.ID != "w" || got.Worker.Name != "w" || !bytes.Equal(got.Worker.TokenHash, []byte("hash-w")) {
		t.Errorf("RemoveWorker returned worker %+v, want w as stored", got.Worker)
	}
	if diff := cmp.Diff([]string{leased.ID, running.ID}, got.Lost); diff != "" {
		t.Errorf("Lost (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{leased.ID, running.ID}, got.Changes.Ended); diff != "" || len(got.Changes.Ready) != 0 {
		t.Errorf("Changes = %+v, want the two lost operations ended and nothing ready (%s)", got.Changes, diff)
	}

	// The token no longer authenticates, and the worker is in no list.
	_, err = b.s.WorkerByTokenHash(b.ctx, []byte("hash-w"))
	wantErr(t, err, store.ErrNotFound)
	all, err := b.s.ListWorkers(b.ctx)
	if err != nil || len(all) != 1 || all[0].ID != "other" {
		t.Errorf("ListWorkers after removing w = %+v, %v; want only other", all, err)
	}
	if inP, err := b.s.PoolWorkers(b.ctx, "p"); err != nil || len(inP) != 1 || inP[0].ID != "other" {
		t.Errorf("PoolWorkers(p) after removing w = %+v, %v; want only other", inP, err)
	}

	// Its operations ended as lost, saying whose and why; the rest are untouched.
	for _, tc := range []struct {
		id, suffix string
	}{{leased.ID, "not run again"}, {running.ID, "not run again (a cancel had been requested)"}} {
		op := b.get(t, tc.id)
		want := "lost: worker w (w) was removed while it held this operation; its result is unknown and it is " + tc.suffix
		if op.State != api.StateLost || op.Message != want || op.FinishedAt == nil || !op.FinishedAt.Equal(at) || op.WorkerID != "w" {
			t.Errorf("operation %s after its worker was removed = %s %q finished %v worker %q; want lost %q at %s, worker w",
				tc.id, op.State, op.Message, op.FinishedAt, op.WorkerID, want, at)
		}
	}
	if v, err := b.s.SensitiveValues(b.ctx, leased.ID); err != nil || len(v) != 0 {
		t.Errorf("sensitive values of a lost operation = %q, %v; want erased", v, err)
	}
	if st := b.get(t, done.ID).State; st != api.StateSucceeded {
		t.Errorf("a finished operation of the removed worker became %s", st)
	}
	if op := b.get(t, theirs.ID); op.State != api.StateLeased || op.WorkerID != "other" {
		t.Errorf("another worker's operation became %s (worker %q)", op.State, op.WorkerID)
	}
	if st := b.get(t, queued.ID).State; st != api.StateQueued {
		t.Errorf("a queued operation became %s", st)
	}
	if l := b.claim(t, "other", []string{"p"}); l == nil || l.Operation.ID != queued.ID {
		t.Errorf("the queued operation is not claimable by another worker: %+v", l)
	}

	// The removed worker's old leases are gone, and it can do nothing more.
	if leases, err := b.s.Leases(b.ctx, "w", at); err != nil || len(leases) != 0 {
		t.Errorf("Leases of a removed worker = %+v, %v", leases, err)
	}
	_, _, err = b.s.Finish(b.ctx, ref(lRunning, "w", at), store.Result{State: api.StateSucceeded, ExitCode: intp(0)})
	var lost *store.LeaseLostError
	if !errors.As(err, &lost) {
		t.Errorf("a result on a lease ended by the removal: %v, want a LeaseLostError", err)
	}
	_, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: at, LeaseExpiresAt: at.Add(time.Minute)})
	wantErr(t, err, store.ErrNotFound)
	_, err = b.s.SetDrain(b.ctx, "w", true)
	wantErr(t, err, store.ErrNotFound)

	// Removing twice, or a worker that never was, is not found; nothing changes.
	_, err = b.s.RemoveWorker(b.ctx, "w", at)
	wantErr(t, err, store.ErrNotFound)
	_, err = b.s.RemoveWorker(b.ctx, "nope", at)
	wantErr(t, err, store.ErrNotFound)
	if op := b.get(t, theirs.ID); op.State != api.StateLeased {
		t.Errorf("a failed removal changed another worker's operation to %s", op.State)
	}
}

// A removed worker's deployment step is lost and the deployment stops, as when a lease expires.
func testRemoveWorkerDeployment(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	d := b.deploy(t, "one", "two", "three")
	b.finish(t, b.mustClaim(t, "w"), "w", api.StateSucceeded, 0)
	b.mustClaim(t, "w")
	got, err := b.s.RemoveWorker(b.ctx, "w", b.now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{d.Operations[1].ID}, got.Lost); diff != "" {
		t.Errorf("Lost (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{d.Operations[1].ID, d.Operations[2].ID}, got.Changes.Ended); diff != "" {
		t.Errorf("Changes.Ended (-want +got):\n%s", diff)
	}
	st, steps := b.dep(t, d.ID)
	if st != api.StateFailed || !cmp.Equal(steps, []api.State{api.StateSucceeded, api.StateLost, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want failed [succeeded lost cancelled]", st, steps)
	}
	if msg := b.get(t, d.Operations[2].ID).Message; msg != "not run: step 2 (two) ended lost" {
		t.Errorf("step 3 message = %q", msg)
	}
}

// Nothing is leased to a worker that does not exist: not by a claim (a removed worker's long-poll still in
// flight), not by a hand-off, not by a request id replay.
func testRemovedWorkerLeasesNothing(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.enqueue(t, api.OperationSpec{})
	p := store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: "req-1", LeaseID: "lease-1", Now: b.now, ExpiresAt: b.now.Add(time.Minute)}
	first, err := b.s.Claim(b.ctx, p)
	if err != nil || first == nil {
		t.Fatalf("Claim = %+v, %v", first, err)
	}
	queued := b.enqueue(t, api.OperationSpec{})
	if _, err := b.s.RemoveWorker(b.ctx, "w", b.now); err != nil {
		t.Fatal(err)
	}
	for _, p := range []store.ClaimParams{p, {WorkerID: "w", Pools: []string{"p"}, LeaseID: "lease-2", Now: b.now, ExpiresAt: b.now.Add(time.Minute)},
		{WorkerID: "never-registered", Pools: []string{"p"}, LeaseID: "lease-3", Now: b.now, ExpiresAt: b.now.Add(time.Minute)}} {
		if l, err := b.s.Claim(b.ctx, p); err != nil || l != nil {
			t.Errorf("Claim for %s (request %q) = %+v, %v; want nothing", p.WorkerID, p.RequestID, l, err)
		}
	}
	l, err := b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: "op-handed", Spec: api.OperationSpec{Pool: "p", Script: "x"}, CreatedAt: b.now},
		store.ClaimParams{WorkerID: "w", LeaseID: "lease-4", Now: b.now, ExpiresAt: b.now.Add(time.Minute)})
	if err != nil || l != nil {
		t.Errorf("CreateLeasedOperation to a removed worker = %+v, %v; want nil and nothing stored", l, err)
	}
	_, err = b.s.Operation(b.ctx, "op-handed")
	wantErr(t, err, store.ErrNotFound)
	if op := b.get(t, queued.ID); op.State != api.StateQueued {
		t.Errorf("the queued operation became %s", op.State)
	}
}
