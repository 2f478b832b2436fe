package server

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// polls starts n lease long-polls of worker w that end with ctx, and waits until all n are asleep; each
// lease granted arrives on the returned channel.
func (b *bundle) polls(ctx context.Context, w *client.Client, n int) (<-chan *api.Lease, *sync.WaitGroup) {
	b.t.Helper()
	got := make(chan *api.Lease, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			l, err := w.Lease(ctx, 30*time.Second)
			if err != nil && ctx.Err() == nil {
				b.t.Errorf("Lease: %v", err)
			}
			if l != nil {
				got <- l
			}
		})
	}
	b.waitAsleep("the polls to wait", func(k int) bool { return k == n })
	return got, &wg
}

// recv waits for the next lease on got (15 s at most, so a broken server fails the test instead of hanging it).
func (b *bundle) recv(what string, got <-chan *api.Lease) *api.Lease {
	b.t.Helper()
	select {
	case l := <-got:
		return l
	case <-time.After(15 * time.Second):
		b.t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// status returns the HTTP status of a client error (0 when there is none).
func status(err error) int {
	if e, ok := api.AsStatusError(err); ok {
		return e.Status
	}
	return 0
}

// TestCapacityIsEnforced: a worker of capacity 4 with 4 lease polls waiting (api.MaxPollsPerWorker) gets 4
// operations of 6 submitted, none more while it is full, and a 5th, handed to a poll waiting meanwhile, once
// one of them ends.
func TestCapacityIsEnforced(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("w", []string{"p"}) // capacity 4
	ctx, cancel := context.WithCancel(b.ctx)
	got, wg := b.polls(ctx, w, api.MaxPollsPerWorker)
	defer func() { cancel(); wg.Wait() }()
	var leased, queued []api.Operation
	for range 6 {
		op := b.submit(api.OperationSpec{Pool: "p"})
		if op.State == api.StateLeased {
			leased = append(leased, op)
		} else {
			queued = append(queued, op)
		}
	}
	if len(leased) != 4 {
		t.Fatalf("a worker of capacity 4 was handed %d of 6 operations, want 4", len(leased))
	}
	first := b.recv("the first lease", got)
	for range 3 {
		b.recv("the leases handed off", got)
	}
	if l, err := w.Lease(b.ctx, 0); err != nil || l != nil {
		t.Fatalf("a full worker leased %+v, %v", l, err)
	}
	got, wg2 := b.polls(ctx, w, 1)
	defer func() { cancel(); wg2.Wait() }()
	if _, err := w.Result(b.ctx, first.Operation.ID, api.ResultRequest{LeaseID: first.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); err != nil {
		t.Fatal(err)
	}
	fifth := b.recv("a fifth lease once one ended", got) // a waiting poll is woken when the slot frees
	if fifth.Operation.ID != queued[0].ID {
		t.Errorf("after one ended the worker got %s, want the oldest queued %s", fifth.Operation.ID, queued[0].ID)
	}
	live, err := b.st.Leases(b.ctx, wid, time.Now())
	if err != nil || len(live) != 4 {
		t.Errorf("the worker holds %d live leases (%v), want 4", len(live), err)
	}
	if st := b.op(queued[1].ID).State; st != api.StateQueued {
		t.Errorf("the sixth operation is %s, want queued", st)
	}
}

// TestDrainStopsAWaitingPoll: a drain asked while a poll waits stops that poll from being handed the next
// operation; another worker takes it.
func TestDrainStopsAWaitingPoll(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("w", []string{"p"})
	ctx, cancel := context.WithCancel(b.ctx)
	got, wg := b.polls(ctx, w, 1)
	defer func() { cancel(); wg.Wait() }()
	if _, err := b.admin.DrainWorker(b.ctx, wid, true); err != nil {
		t.Fatal(err)
	}
	op := b.submit(api.OperationSpec{Pool: "p"})
	if op.State != api.StateQueued || op.WorkerID != "" {
		t.Fatalf("an operation submitted after the drain went to the draining worker's waiting poll: %s, worker %q", op.State, op.WorkerID)
	}
	other, _ := b.worker("other", []string{"p"})
	if l := b.lease(other); l.Operation.ID != op.ID {
		t.Errorf("another worker leased %s, want %s", l.Operation.ID, op.ID)
	}
	cancel()
	wg.Wait()
	select {
	case l := <-got:
		t.Errorf("the draining worker's poll got %s", l.Operation.ID)
	default:
	}
}

// TestWorkerStates: the server keeps what the worker reported, judges its state, and leases to an unhealthy
// or unavailable worker nothing.
func TestWorkerStates(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("w", []string{"p"})
	checked := time.Now().UTC().Add(-time.Second).Truncate(time.Millisecond)
	failing := []api.Check{{Name: api.CheckKubernetesAPI, OK: true},
		{Name: api.CheckPermissions, Message: "cannot create jobs.batch in namespace ci: grant the worker's Role that verb"}}
	heartbeat := func(h api.Health, version string) {
		t.Helper()
		if _, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: version, Capacity: 4, Health: h}); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat(api.Health{OK: false, Message: "permissions failed", Checks: failing, CheckedAt: checked}, "1.0.0")
	got, err := b.admin.Worker(b.ctx, wid)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.WorkerUnhealthy || !cmp.Equal(got.Checks, failing) || !got.LastCheck.Equal(checked) {
		t.Errorf("worker = state %s, checks %+v, last check %s; want unhealthy with its checks at %s", got.State, got.Checks, got.LastCheck, checked)
	}
	op := b.submit(api.OperationSpec{Pool: "p"})
	if l, err := w.Lease(b.ctx, 0); err != nil || l != nil {
		t.Fatalf("an unhealthy worker leased %+v, %v", l, err)
	}
	heartbeat(api.Health{OK: true, Checks: []api.Check{{Name: api.CheckPermissions, OK: true}}, CheckedAt: checked}, "1.0.0")
	if l := b.lease(w); l.Operation.ID != op.ID {
		t.Errorf("the worker healthy again leased %s, want %s", l.Operation.ID, op.ID)
	}
	chart := append([]byte{0x1f, 0x8b}, "chart"...)
	if _, err := b.admin.UploadChart(b.ctx, "1.1.0", chart); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.SetDesiredVersion(b.ctx, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	list, err := b.admin.Workers(b.ctx)
	if err != nil || len(list) != 1 || list[0].State != api.WorkerOutdated {
		t.Errorf("workers = %+v, %v; want one, outdated", list, err)
	}
	// A worker silent for more than three heartbeat intervals is unavailable (its last heartbeat, set back an
	// hour, as the store would hold it).
	if _, err := b.st.Heartbeat(b.ctx, store.Heartbeat{WorkerID: wid, Now: time.Now().Add(-time.Hour),
		HeartbeatRequest: api.HeartbeatRequest{Version: "1.1.0", Capacity: 4, Health: api.Health{OK: true}}}); err != nil {
		t.Fatal(err)
	}
	got, err = b.admin.Worker(b.ctx, wid)
	if err != nil || got.State != api.WorkerUnavailable || got.Healthy || !strings.Contains(got.HealthMessage, "no heartbeat for 1h") {
		t.Errorf("silent worker = %+v, %v; want unavailable", got, err)
	}
	b.submit(api.OperationSpec{Pool: "p"})
	if l, err := w.Lease(b.ctx, 0); err != nil || l != nil {
		t.Errorf("an unavailable worker leased %+v, %v", l, err)
	}
	if _, err := b.admin.CheckWorker(b.ctx, wid); status(err) != http.StatusConflict || !strings.Contains(err.Error(), "unavailable") {
		t.Errorf("check of an unavailable worker: %v, want 409", err)
	}
	if _, err := b.admin.Worker(b.ctx, "wkr-nope"); !client.IsNotFound(err) {
		t.Errorf("unknown worker: %v, want 404", err)
	}
}

// TestCheckWorker: a health check asked for by an admin reaches the worker's waiting poll at once, before its
// pools' other operations and although the worker is unhealthy; no other worker takes it.
func TestCheckWorker(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("w", []string{"p"})
	other, _ := b.worker("other", []string{"p"})
	if _, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 4,
		Health: api.Health{OK: false, Checks: []api.Check{{Name: api.CheckInformers, Message: "watch failed"}}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	got, wg := b.polls(ctx, w, 1)
	defer func() { cancel(); wg.Wait() }()
	check, err := b.admin.CheckWorker(b.ctx, wid)
	if err != nil {
		t.Fatal(err)
	}
	if check.State != api.StateQueued || check.Syntax != "sh" || check.Image != "" || !strings.Contains(check.Script, "octo-worker health check") {
		t.Errorf("check operation = %+v; want a queued sh script in the default image", check)
	}
	if l := b.recv("the check", got); l.Operation.ID != check.ID {
		t.Fatalf("the worker's poll got %s, want the check %s", l.Operation.ID, check.ID)
	}
	second, err := b.admin.CheckWorker(b.ctx, wid)
	if err != nil {
		t.Fatal(err)
	}
	op := b.submit(api.OperationSpec{Pool: "p"})
	if l := b.lease(other); l.Operation.ID != op.ID {
		t.Errorf("another worker leased %s, want the pool's operation %s, never the check", l.Operation.ID, op.ID)
	}
	if l := b.lease(w); l.Operation.ID != second.ID {
		t.Errorf("the unhealthy worker leased %s, want its second check %s", l.Operation.ID, second.ID)
	}
	if _, err := b.admin.DrainWorker(b.ctx, wid, true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.CheckWorker(b.ctx, wid); status(err) != http.StatusConflict || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("check of a draining worker: %v, want 409 saying how to resume it", err)
	}
	if _, err := b.admin.CheckWorker(b.ctx, "wkr-nope"); !client.IsNotFound(err) {
		t.Errorf("check of an unknown worker: %v, want 404", err)
	}
}
