package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// worker creates worker id in pool p as set by opts (healthy, heartbeated at b.now, capacity 100 unless
// changed).
func (b *bundle) worker(t *testing.T, id string, opts func(w *api.Worker)) {
	t.Helper()
	w := api.Worker{ID: id, Name: id, Pools: []string{"p"}, Version: "1", Capacity: 100, Healthy: true,
		RegisteredAt: b.now, LastHeartbeat: b.now}
	if opts != nil {
		opts(&w)
	}
	if err := b.s.CreateWorker(b.ctx, store.Worker{Worker: w, TokenHash: []byte("hash-" + id), TokenID: "t"}); err != nil {
		t.Fatalf("CreateWorker(%s): %v", id, err)
	}
	b.registered[id] = true
}

// params is a claim for worker of pool p, its heartbeat window opening at since.
func (b *bundle) params(worker string, since time.Time) store.ClaimParams {
	return store.ClaimParams{WorkerID: worker, Pools: []string{"p"}, LeaseID: b.id("lease"), Now: b.now,
		ExpiresAt: b.now.Add(time.Minute), HeartbeatSince: since}
}

// testCapacity: a worker holds at most its capacity in live leases, by claim and by hand-off alike; a slot
// frees when an operation ends.
func testCapacity(t *testing.T, b *bundle) {
	b.worker(t, "w", func(w *api.Worker) { w.Capacity = 2 })
	for range 3 {
		b.enqueue(t, api.OperationSpec{})
	}
	var held []*api.Lease
	for i := range 3 {
		l, err := b.s.Claim(b.ctx, b.params("w", b.now))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := l != nil, i < 2; got != want {
			t.Fatalf("claim %d with %d leases held and capacity 2: leased = %v, want %v", i+1, len(held), got, want)
		}
		if l != nil {
			held = append(held, l)
		}
	}
	handed, err := b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: "op-handed", Spec: api.OperationSpec{Pool: "p", Script: "x"},
		CreatedAt: b.now}, b.params("w", b.now))
	if err != nil || handed != nil {
		t.Fatalf("hand-off to a full worker = %+v, %v; want nothing", handed, err)
	}
	if _, err := b.s.Operation(b.ctx, "op-handed"); err == nil {
		t.Error("a refused hand-off stored its operation; the caller enqueues it instead")
	}
	b.finish(t, held[0], "w", api.StateSucceeded, 0)
	if l, err := b.s.Claim(b.ctx, b.params("w", b.now)); err != nil || l == nil {
		t.Errorf("claim after one operation ended = %+v, %v; want the third operation", l, err)
	}
}

// testWhoTakesWork: a claim and a hand-off lease only to a worker not asked to drain, healthy by its last
// report and heartbeating within the window; the operation stays queued for another worker.
func testWhoTakesWork(t *testing.T, b *bundle) {
	tests := []struct {
		name  string
		opts  func(w *api.Worker)
		drain bool
		since time.Time // the window: heartbeats at or after
		takes bool
	}{
		{name: "healthy", takes: true},
		{name: "healthy-in-window", since: b.now, takes: true},
		{name: "drain-requested", drain: true},
		{name: "unhealthy", opts: func(w *api.Worker) { w.Healthy, w.HealthMessage = false, "kubernetes-api: connection refused" }},
		{name: "silent", since: b.now.Add(time.Nanosecond)},
		{name: "no-capacity", opts: func(w *api.Worker) { w.Capacity = 0 }},
	}
	for _, tt := range tests {
		b.worker(t, tt.name, tt.opts)
		if tt.drain {
			if _, err := b.s.SetDrain(b.ctx, tt.name, true); err != nil {
				t.Fatal(err)
			}
		}
		queued := b.enqueue(t, api.OperationSpec{})
		l, err := b.s.Claim(b.ctx, b.params(tt.name, tt.since))
		if err != nil {
			t.Fatal(err)
		}
		if got := l != nil; got != tt.takes {
			t.Errorf("%s: claimed = %v, want %v", tt.name, got, tt.takes)
		}
		handed, err := b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: b.id("op-handed"), Spec: api.OperationSpec{Pool: "p", Script: "x"},
			CreatedAt: b.now}, b.params(tt.name, tt.since))
		if err != nil {
			t.Fatal(err)
		}
		if got := handed != nil; got != tt.takes {
			t.Errorf("%s: handed off = %v, want %v", tt.name, got, tt.takes)
		}
		if !tt.takes {
			if op := b.get(t, queued.ID); op.State != api.StateQueued {
				t.Errorf("%s: the operation it could not take is %s, want queued", tt.name, op.State)
			}
			// Leave it to nobody: the next case must not see it.
			if _, _, err := b.s.Cancel(b.ctx, queued.ID, b.now); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// testTargeted: an operation targeted at a worker goes to that worker only, before its pools' other
// operations and whatever its health, but not past its capacity or a drain; removing the worker cancels it.
func testTargeted(t *testing.T, b *bundle) {
	b.worker(t, "sick", func(w *api.Worker) { w.Healthy, w.Capacity = false, 1 })
	b.worker(t, "other", nil)
	older := b.enqueue(t, api.OperationSpec{Name: "older"})
	target := func(id string) api.Operation {
		t.Helper()
		op, err := b.s.CreateOperation(b.ctx, store.NewOperation{ID: id, Spec: api.OperationSpec{Pool: "p", Script: "id"},
			CreatedAt: b.now, TargetWorker: "sick"})
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	check := target("op-check")
	if l, err := b.s.Claim(b.ctx, b.params("other", b.now)); err != nil || l == nil || l.Operation.ID != older.ID {
		t.Fatalf("another worker claimed %+v, %v; want the older pool operation, never the targeted one", l, err)
	}
	if l, err := b.s.Claim(b.ctx, b.params("other", b.now)); err != nil || l != nil {
		t.Fatalf("another worker claimed %+v, %v; the targeted operation is not its to take", l, err)
	}
	newer := b.enqueue(t, api.OperationSpec{Name: "newer"})
	l, err := b.s.Claim(b.ctx, b.params("sick", b.now))
	if err != nil || l == nil || l.Operation.ID != check.ID {
		t.Fatalf("the unhealthy target claimed %+v, %v; want its targeted operation", l, err)
	}
	second := target("op-check-2")
	if l, err := b.s.Claim(b.ctx, b.params("sick", b.now)); err != nil || l != nil {
		t.Fatalf("a full target claimed %+v, %v; want nothing until a slot frees", l, err)
	}
	b.finish(t, l, "sick", api.StateSucceeded, 0)
	if _, err := b.s.SetDrain(b.ctx, "sick", true); err != nil {
		t.Fatal(err)
	}
	if l, err := b.s.Claim(b.ctx, b.params("sick", b.now)); err != nil || l != nil {
		t.Fatalf("a target asked to drain claimed %+v, %v; want nothing", l, err)
	}
	if _, err := b.s.SetDrain(b.ctx, "sick", false); err != nil {
		t.Fatal(err)
	}
	third := target("op-check-3")
	if l, err := b.s.Claim(b.ctx, b.params("sick", b.now)); err != nil || l == nil || l.Operation.ID != second.ID {
		t.Fatalf("the target claimed %+v, %v; want its oldest targeted operation %s", l, err, second.ID)
	}
	if got := b.get(t, newer.ID).State; got != api.StateQueued {
		t.Errorf("the unhealthy worker took a pool operation: %s is %s", newer.ID, got)
	}
	removed, err := b.s.RemoveWorker(b.ctx, "sick", b.now)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.get(t, third.ID); got.State != api.StateCancelled || got.Message != store.MessageTargetRemoved("sick", "sick") {
		t.Errorf("targeted operation of a removed worker = %s %q, want cancelled", got.State, got.Message)
	}
	if !cmp.Equal(sorted(removed.Changes.Ended...), sorted(second.ID, third.ID)) {
		t.Errorf("removal ended %v, want the lost %s and the cancelled %s", removed.Changes.Ended, second.ID, third.ID)
	}
}

// testHealthReport: a heartbeat's checks and the time they ran are kept with the worker.
func testHealthReport(t *testing.T, b *bundle) {
	b.worker(t, "w", nil)
	checked := b.now.Add(-time.Second)
	checks := []api.Check{{Name: api.CheckKubernetesAPI, OK: true}, {Name: api.CheckPermissions, OK: false, Message: "cannot create jobs"}}
	if _, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: b.now, HeartbeatRequest: api.HeartbeatRequest{Version: "1", Capacity: 1,
		Health: api.Health{OK: false, Message: "permissions: cannot create jobs", Checks: checks, CheckedAt: checked}}}); err != nil {
		t.Fatal(err)
	}
	got, err := b.s.Worker(b.ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if got.Healthy || !cmp.Equal(got.Checks, checks) || !got.LastCheck.Equal(checked) {
		t.Errorf("worker after heartbeat: healthy %v, checks %+v, last check %s; want unhealthy with the checks at %s",
			got.Healthy, got.Checks, got.LastCheck, checked)
	}
	_, err = b.s.Worker(b.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
}
