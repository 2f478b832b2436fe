package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// TestRemoveWorker: an admin removes a worker. Its token stops working at once (the worker called a moment
// before, so the authentication cache held it), the operations it held end as lost with a message naming it,
// its deployment stops, a follower of a lost operation gets the end, and it leaves the list. Queued
// operations and other workers are untouched; removing it again is 404.
func TestRemoveWorker(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("web-1", []string{"p"})
	other, otherID := b.worker("web-2", []string{"p"})
	leased := b.submit(api.OperationSpec{Pool: "p", Name: "leased"})
	b.lease(w)
	running := b.submit(api.OperationSpec{Pool: "p", Name: "running"})
	lr := b.lease(w)
	if _, err := w.SetRunning(b.ctx, running.ID, lr.LeaseID, "job created"); err != nil {
		t.Fatal(err)
	}
	dep, err := b.admin.Deploy(b.ctx, api.DeploymentSpec{Name: "release", Pool: "p", Steps: []api.OperationSpec{{Script: "one"}, {Script: "two"}}})
	if err != nil {
		t.Fatal(err)
	}
	if l := b.lease(w); l.Operation.ID != dep.Operations[0].ID {
		t.Fatalf("leased %s, want the deployment's first step", l.Operation.ID)
	}
	theirs := b.submit(api.OperationSpec{Pool: "p", Name: "theirs"})
	b.lease(other)
	queued := b.submit(api.OperationSpec{Pool: "p", Name: "queued"})
	if _, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Running: []string{leased.ID, running.ID, dep.Operations[0].ID},
		Health: api.Health{OK: true}}); err != nil {
		t.Fatal(err)
	}
	followed := make(chan *api.LogEnd, 1)
	go func() {
		end, _ := b.admin.Logs(b.ctx, running.ID, client.LogsOptions{Follow: true}, func(api.LogLine) error { return nil })
		followed <- end
	}()

	if _, err := w.Leases(b.ctx); err != nil { // the authentication cache holds the worker now
		t.Fatal(err)
	}

	rm, err := b.admin.RemoveWorker(b.ctx, wid)
	if err != nil {
		t.Fatalf("RemoveWorker: %v", err)
	}
	if rm.Worker.ID != wid || rm.Worker.Name != "web-1" {
		t.Errorf("removed worker = %+v, want %s web-1", rm.Worker, wid)
	}
	if diff := cmp.Diff([]string{leased.ID, running.ID, dep.Operations[0].ID}, rm.Lost); diff != "" {
		t.Errorf("Lost (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{dep.Operations[1].ID}, rm.Cancelled); diff != "" {
		t.Errorf("Cancelled (-want +got):\n%s", diff)
	}

	// At once: no wait for the authentication cache.
	if _, err := w.Leases(b.ctx); !client.IsUnauthorized(err) || !strings.Contains(err.Error(), "worker was removed") {
		t.Errorf("leases of the removed worker: %v, want 401 saying it may have been removed", err)
	}
	if _, err := w.Heartbeat(b.ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Health: api.Health{OK: true}}); !client.IsUnauthorized(err) {
		t.Errorf("heartbeat of the removed worker: %v, want 401", err)
	}
	if _, err := w.Result(b.ctx, running.ID, api.ResultRequest{LeaseID: lr.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); !client.IsUnauthorized(err) {
		t.Errorf("a result from the removed worker: %v, want 401", err)
	}
	ws, err := b.admin.Workers(b.ctx)
	if err != nil || len(ws) != 1 || ws[0].ID != otherID {
		t.Errorf("workers after the removal = %+v, %v; want only %s", ws, err, otherID)
	}

	for _, id := range []string{leased.ID, running.ID, dep.Operations[0].ID} {
		op := b.op(id)
		if op.State != api.StateLost || !strings.Contains(op.Message, "worker web-1 ("+wid+") was removed while it held this operation; its result is unknown") {
			t.Errorf("operation %s = %s %q, want lost with a message naming the removed worker", id, op.State, op.Message)
		}
	}
	d, err := b.admin.Deployment(b.ctx, dep.ID)
	if err != nil || d.State != api.StateFailed || d.Operations[1].State != api.StateCancelled {
		t.Errorf("deployment after its step was lost = %+v, %v; want failed, step 2 cancelled", d, err)
	}
	select {
	case end := <-followed:
		if end == nil || end.State != api.StateLost {
			t.Errorf("the follower of a lost operation ended with %+v, want the lost end", end)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the follower of a lost operation did not end")
	}
	if op := b.op(theirs.ID); op.State != api.StateLeased {
		t.Errorf("another worker's operation became %s", op.State)
	}
	if op := b.op(queued.ID); op.State != api.StateQueued {
		t.Errorf("a queued operation became %s", op.State)
	}
	if l := b.lease(other); l.Operation.ID != queued.ID {
		t.Errorf("the other worker leased %s, want the queued operation", l.Operation.ID)
	}

	_, err = b.admin.RemoveWorker(b.ctx, wid)
	if !client.IsNotFound(err) || !strings.Contains(err.Error(), "workers list") {
		t.Errorf("removing twice: %v, want 404 pointing at workers list", err)
	}
}

// TestRemoveWorkerRefusals: the id is checked before it reaches the store, and the route is the admin's.
func TestRemoveWorkerRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	wToken, wid := b.register("w", []string{"p"})
	tests := []struct {
		name, path, token string
		status            int
		field, text       string
	}{
		{"unknown id", "/api/v1/workers/wkr-0000000000000000", adminToken, 404, "", "does not exist"},
		{"space in the id", "/api/v1/workers/wkr%20x", adminToken, 400, "id", "not a worker id"},
		{"quote in the id", "/api/v1/workers/wkr%22x", adminToken, 400, "id", "not a worker id"},
		{"id too long", "/api/v1/workers/" + strings.Repeat("a", 129), adminToken, 400, "id", "at most 128"},
		{"worker token", "/api/v1/workers/" + wid, wToken, 403, "", "admin token"},
		{"no token", "/api/v1/workers/" + wid, "", 401, "", "missing bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, e := b.raw("DELETE", tt.path, tt.token, nil)
			if status != tt.status || e.Field != tt.field || !strings.Contains(e.Error, tt.text) {
				t.Errorf("DELETE %s = %d field %q %q; want %d field %q containing %q", tt.path, status, e.Field, e.Error, tt.status, tt.field, tt.text)
			}
		})
	}
	if status, e := b.raw("POST", "/api/v1/worker/deregister", adminToken, nil); status != 403 || !strings.Contains(e.Error, "worker token") {
		t.Errorf("the admin token deregistering = %d %q, want 403", status, e.Error)
	}
	if ws, err := b.admin.Workers(b.ctx); err != nil || len(ws) != 1 {
		t.Errorf("after the refusals the workers are %+v, %v; want w still there", ws, err)
	}
}

// TestWorkerDeregistersItself: a worker removes itself with its own token; a repeat gets 401, because that
// token stopped working with the first call.
func TestWorkerDeregistersItself(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("w", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p"})
	b.lease(w)
	rm, err := w.Deregister(b.ctx)
	if err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if rm.Worker.ID != wid || !cmp.Equal(rm.Lost, []string{op.ID}) || rm.Cancelled == nil || len(rm.Cancelled) != 0 {
		t.Errorf("Deregister = %+v, want worker %s with %s lost and nothing cancelled", rm, wid, op.ID)
	}
	_, err = w.Deregister(b.ctx)
	if !client.IsUnauthorized(err) || !strings.Contains(err.Error(), "worker was removed") {
		t.Errorf("a second deregistration: %v, want 401", err)
	}
	if got := b.op(op.ID); got.State != api.StateLost || !strings.Contains(got.Message, "was removed") {
		t.Errorf("the operation it held = %s %q, want lost", got.State, got.Message)
	}
	if ws, err := b.admin.Workers(b.ctx); err != nil || len(ws) != 0 {
		t.Errorf("workers after it deregistered: %+v, %v", ws, err)
	}
	if _, err := b.admin.RemoveWorker(b.ctx, wid); !client.IsNotFound(err) {
		t.Errorf("an admin removing a worker that deregistered itself: %v, want 404", err)
	}
}

// TestRemovalEndsLongPolls: a removed worker's long-polls in flight end at once with 401 (the agent is
// still running when its release's pre-delete hook deregisters it), and an operation submitted afterwards
// reaches another worker's poll at once: the removed worker's poll, older, neither takes the hand-off nor
// swallows the wake-up.
func TestRemovalEndsLongPolls(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, wid := b.worker("removed", []string{"p"})
	other, _ := b.worker("other", []string{"p"})
	type result struct {
		l   *api.Lease
		err error
		at  time.Time
	}
	poll := func(c *client.Client) chan result {
		ch := make(chan result, 1)
		go func() {
			l, err := c.Lease(b.ctx, 30*time.Second)
			ch <- result{l, err, time.Now()}
		}()
		return ch
	}
	removedPoll := poll(w)
	b.waitAsleep("the first worker to wait", func(n int) bool { return n == 1 })
	otherPoll := poll(other)
	b.waitAsleep("both workers to wait", func(n int) bool { return n == 2 })

	start := time.Now()
	if _, err := b.admin.RemoveWorker(b.ctx, wid); err != nil {
		t.Fatal(err)
	}
	r := <-removedPoll
	if !client.IsUnauthorized(r.err) || !strings.Contains(r.err.Error(), "removed while it waited") || r.at.Sub(start) > 5*time.Second {
		t.Errorf("the removed worker's poll = %+v after %s, want 401 at once", r, r.at.Sub(start))
	}
	op := b.submit(api.OperationSpec{Pool: "p"})
	select {
	case r := <-otherPoll:
		if r.err != nil || r.l == nil || r.l.Operation.ID != op.ID {
			t.Errorf("the other worker's poll = %+v, want %s", r, op.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the operation did not reach the other worker's waiting poll")
	}
}

// TestHandOffToARemovedWorkerQueues: a submit that reserves the poll of a worker removed a moment ago (its
// poll not yet ended) queues the operation instead of leasing it to nobody.
func TestHandOffToARemovedWorkerQueues(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	done := make(chan struct{})
	defer close(done)
	waiter := b.srv.queue.Wait([]string{"p"}, nil, store.ClaimParams{WorkerID: "wkr-removed", LeaseID: "lease-x"}, done)
	waiter.Idle()
	op := b.submit(api.OperationSpec{Pool: "p"})
	if op.State != api.StateQueued || op.WorkerID != "" {
		t.Errorf("submitted = %s to %q, want queued", op.State, op.WorkerID)
	}
	if d, ok := waiter.Done("", waiter.Take()); ok {
		t.Errorf("the removed worker's waiter was delivered %+v", d)
	}
	w, _ := b.worker("w", []string{"p"})
	if l := b.lease(w); l.Operation.ID != op.ID {
		t.Errorf("leased %s, want %s", l.Operation.ID, op.ID)
	}
}

// TestRemovalUnderLoad removes workers while all of them lease and finish operations: every operation
// ends, those a removed worker held as lost. A lease granted to a worker after its removal would stay leased
// (the worker's result is refused with 401) and fail the wait.
func TestRemovalUnderLoad(t *testing.T) {
	t.Parallel()
	const workers, ops = 6, 300
	b := setup(t, testConfig())
	b.pool("p")
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	var ids []string
	stopped := make(chan struct{}, workers)
	for i := range workers {
		c, id := b.worker(fmt.Sprintf("w%d", i), []string{"p"})
		ids = append(ids, id)
		go func() {
			defer func() { stopped <- struct{}{} }()
			for ctx.Err() == nil {
				// Heartbeat like a worker (it holds nothing between its lease and its result): a worker silent
				// for SilentHeartbeats intervals is leased nothing, and on a loaded machine this test outlasts
				// that, so its operations never ended.
				_, err := c.Heartbeat(ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Running: []string{}, Health: api.Health{OK: true}})
				if client.IsUnauthorized(err) {
					return // removed
				}
				l, err := c.Lease(ctx, 2*time.Second)
				if client.IsUnauthorized(err) {
					return // removed
				}
				if err != nil || l == nil {
					continue
				}
				_, _ = c.Result(ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)})
			}
		}()
	}
	removed := map[string]bool{}
	for i := range ops {
		b.submit(api.OperationSpec{Pool: "p"})
		if i%100 == 50 {
			id := ids[len(removed)]
			if _, err := b.admin.RemoveWorker(b.ctx, id); err != nil {
				t.Fatal(err)
			}
			removed[id] = true
		}
	}
	var list []api.Operation
	for { // wait on the signal of one operation still live, then look again
		var err error
		if list, err = b.admin.Operations(b.ctx, client.ListOptions{Limit: 1000}); err != nil {
			t.Fatal(err)
		}
		live := slices.IndexFunc(list, func(o api.Operation) bool { return !o.State.Terminal() })
		if live < 0 {
			break
		}
		b.waitOp("every operation to end", list[live].ID, func(op api.Operation) bool { return op.State.Terminal() })
	}
	if len(list) != ops {
		t.Fatalf("%d operations listed, want %d", len(list), ops)
	}
	cancel()
	for range workers {
		<-stopped
	}
	for _, op := range list {
		switch {
		case op.State == api.StateSucceeded:
		case op.State == api.StateLost && removed[op.WorkerID] && strings.Contains(op.Message, "was removed"):
		default:
			t.Errorf("operation %s ended %s under worker %s (removed: %v): %q", op.ID, op.State, op.WorkerID, removed[op.WorkerID], op.Message)
		}
	}
}
