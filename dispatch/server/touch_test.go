package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// beatCounter is a real store that counts the heartbeats written one by one and in batches.
type beatCounter struct {
	store.Store
	beats, batches, touched atomic.Int64
}

func (c *beatCounter) Heartbeat(ctx context.Context, h store.Heartbeat) (store.HeartbeatReply, error) {
	c.beats.Add(1)
	return c.Store.Heartbeat(ctx, h)
}

func (c *beatCounter) TouchWorkers(ctx context.Context, ts []store.Touch) (map[string]bool, error) {
	c.batches.Add(1)
	c.touched.Add(int64(len(ts)))
	return c.Store.TouchWorkers(ctx, ts)
}

// TestIdleHeartbeatsBatched: of an idle worker's heartbeats only the first is written by itself; the others'
// times go in batches, the last one's written by the time the server stopped. A heartbeat that changes what
// the worker reports, and one of a worker running something, are written at once.
func TestIdleHeartbeatsBatched(t *testing.T) {
	t.Parallel()
	st := setup(t, idleConfig()).st
	bc := &beatCounter{Store: sharedStore{st}}
	b := serveStore(t, idleConfig(), nil, bc)
	b.pool("p")
	w, wid := b.worker("w", []string{"p"})
	hb := api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Health: api.Health{OK: true}, Profiles: []string{}}
	var last time.Time
	for range 10 {
		last = time.Now()
		hb.Health.CheckedAt = last // checks that ran again report nothing new
		if _, err := w.Heartbeat(b.ctx, hb); err != nil {
			t.Fatal(err)
		}
	}
	b.srv.flushTouches(b.ctx)
	// Within a batch a worker's touches make one row: the last.
	if n, m := bc.beats.Load(), bc.touched.Load(); n != 1 || m < 1 || m > 9 {
		t.Errorf("10 idle heartbeats: %d written one by one and %d in %d batches, want 1 and 1 to 9", n, m, bc.batches.Load())
	}
	if wk, err := st.Worker(b.ctx, wid); err != nil || wk.LastCheck.Before(last) {
		t.Errorf("worker after a batch = %+v, %v; want its last check at %s", wk.Worker, err, last)
	}
	hb.Health.Message = "slow"
	if _, err := w.Heartbeat(b.ctx, hb); err != nil {
		t.Fatal(err)
	}
	if n := bc.beats.Load(); n != 2 {
		t.Errorf("a heartbeat with a new health message: %d written one by one, want 2", n)
	}
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	hb.Running = []string{l.Operation.ID}
	for range 2 {
		if _, err := w.Heartbeat(b.ctx, hb); err != nil {
			t.Fatal(err)
		}
	}
	if n := bc.beats.Load(); n != 4 {
		t.Errorf("two heartbeats running %s: %d written one by one, want 4", op.ID, n)
	}
	hb.Running = nil
	for range 2 { // the second one is idle again, and written when the server stops
		last = time.Now()
		hb.Health.CheckedAt = last
		if _, err := w.Heartbeat(b.ctx, hb); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	if n := bc.beats.Load(); n != 5 {
		t.Errorf("in all %d heartbeats written one by one, want 5", n)
	}
	if wk, err := st.Worker(context.Background(), wid); err != nil || wk.LastCheck.Before(last) {
		t.Errorf("worker after the server stopped = %+v, %v; want its last check at %s", wk.Worker, err, last)
	}
}

// TestIdleHeartbeatsAcrossServers: an idle heartbeat answers a drain asked for through another server once a
// batch ran, and a worker that heartbeated through another server meanwhile has its next heartbeat here
// written in full.
func TestIdleHeartbeatsAcrossServers(t *testing.T) {
	t.Parallel()
	st := setup(t, idleConfig()).st
	bc := &beatCounter{Store: sharedStore{st}}
	a := serveStore(t, idleConfig(), nil, bc)
	other := serveStore(t, idleConfig(), nil, sharedStore{st})
	a.pool("p")
	token, wid := a.register("w", []string{"p"})
	wa, wo := a.client(token), other.client(token)
	hb := api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Health: api.Health{OK: true}, Profiles: []string{}}
	beat := func(c interface {
		Heartbeat(context.Context, api.HeartbeatRequest) (api.HeartbeatResponse, error)
	}) api.HeartbeatResponse {
		t.Helper()
		r, err := c.Heartbeat(a.ctx, hb)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	beat(wa)
	beat(wa) // idle
	if _, err := other.admin.DrainWorker(a.ctx, wid, true); err != nil {
		t.Fatal(err)
	}
	beat(wa) // idle: queued with the drain unknown here
	a.srv.flushTouches(a.ctx)
	if r := beat(wa); !r.Drain {
		t.Errorf("idle heartbeat after a batch = %+v; want the drain asked for through the other server", r)
	}
	a.srv.flushTouches(a.ctx)
	n := bc.beats.Load()
	beat(wo)
	beat(wa) // idle here, but the stored heartbeat is the other server's: the batch drops it
	a.srv.flushTouches(a.ctx)
	beat(wa)
	if got := bc.beats.Load() - n; got != 1 {
		t.Errorf("after a heartbeat through the other server, %d written in full here, want 1", got)
	}
}
