package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// readCounter is a real store that counts the reads an idle worker's calls may cost.
type readCounter struct {
	store.Store
	workers, settings atomic.Int64
}

func (c *readCounter) WorkerByTokenHash(ctx context.Context, h []byte) (store.Worker, error) {
	c.workers.Add(1)
	return c.Store.WorkerByTokenHash(ctx, h)
}

func (c *readCounter) Setting(ctx context.Context, key string) (string, error) {
	c.settings.Add(1)
	return c.Store.Setting(ctx, key)
}

// sharedStore is a store a second server uses too: the first closes it.
type sharedStore struct{ store.Store }

func (sharedStore) Close() error { return nil }

// idleConfig makes the caches' lifetimes (from the heartbeat interval) longer than any test run.
func idleConfig() Config {
	return Config{PollInterval: time.Hour, HeartbeatInterval: time.Minute, LeaseTTL: 10 * time.Minute}
}

// TestIdleWorkerReadsOnce: a worker that heartbeats and long-polls without changing its offer is read from the
// store once, and the desired version once, however many calls it makes; a version set through this server is
// answered at the next heartbeat all the same.
func TestIdleWorkerReadsOnce(t *testing.T) {
	t.Parallel()
	st := setup(t, idleConfig()).st // only its store: the server below counts its reads
	rc := &readCounter{Store: sharedStore{st}}
	b := serveStore(t, idleConfig(), nil, rc)
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	hb := api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Health: api.Health{OK: true}, Profiles: []string{}}
	for range 10 {
		if _, err := w.Heartbeat(b.ctx, hb); err != nil {
			t.Fatal(err)
		}
		if l, err := w.Lease(b.ctx, 0); err != nil || l != nil {
			t.Fatalf("Lease = %+v, %v; want nothing", l, err)
		}
	}
	if n := rc.workers.Load(); n != 1 {
		t.Errorf("10 heartbeats and 10 long-polls read the worker %d times, want once", n)
	}
	if n := rc.settings.Load(); n != 1 {
		t.Errorf("10 heartbeats read the desired version %d times, want once", n)
	}
	if _, err := b.admin.UploadChart(b.ctx, "1.1.0", append([]byte{0x1f, 0x8b}, "chart"...)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.SetDesiredVersion(b.ctx, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if r, err := w.Heartbeat(b.ctx, hb); err != nil || r.DesiredVersion != "1.1.0" {
		t.Errorf("heartbeat after the version was set = %+v, %v; want desired version 1.1.0", r, err)
	}
}

// TestHeartbeatChangesOffer: a heartbeat that changes the worker's capabilities drops its cached record, so
// its next long-poll claims with the new ones.
func TestHeartbeatChangesOffer(t *testing.T) {
	t.Parallel()
	b := setup(t, idleConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	hb := api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Health: api.Health{OK: true}}
	if _, err := w.Heartbeat(b.ctx, hb); err != nil { // cached, without capabilities
		t.Fatal(err)
	}
	hb.Capabilities = []string{"helm"}
	if _, err := w.Heartbeat(b.ctx, hb); err != nil {
		t.Fatal(err)
	}
	op := b.submit(api.OperationSpec{Pool: "p", Capabilities: []string{"helm"}})
	if l := b.lease(w); l.Operation.ID != op.ID {
		t.Errorf("leased %s, want %s", l.Operation.ID, op.ID)
	}
}

// TestResumedThroughAnotherServer: a worker this server cached as asked to drain, resumed through another
// server on the same database, is not held: its long-poll here claims at once.
func TestResumedThroughAnotherServer(t *testing.T) {
	t.Parallel()
	a := setup(t, idleConfig())
	other := serveStore(t, idleConfig(), nil, sharedStore{a.st})
	a.pool("p")
	w, wid := a.worker("w", []string{"p"})
	if _, err := a.admin.DrainWorker(a.ctx, wid, true); err != nil {
		t.Fatal(err)
	}
	if r, err := w.Heartbeat(a.ctx, api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Health: api.Health{OK: true}}); err != nil || !r.Drain {
		t.Fatalf("heartbeat = %+v, %v; want drain", r, err) // a holds the worker as draining now
	}
	if _, err := other.admin.DrainWorker(a.ctx, wid, false); err != nil {
		t.Fatal(err)
	}
	op := other.submit(api.OperationSpec{Pool: "p"})
	if l := a.lease(w); l.Operation.ID != op.ID {
		t.Errorf("leased %s, want %s", l.Operation.ID, op.ID)
	}
}

// TestRecheckAfter: a waiting long-poll re-checks around PollInterval, and less often once more than
// recheckShare polls wait, so that the server's re-checks stay about recheckShare per PollInterval.
func TestRecheckAfter(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		polls    int64
		from, to time.Duration
	}{
		{1, 2500 * time.Millisecond, 7500 * time.Millisecond},
		{recheckShare, 2500 * time.Millisecond, 7500 * time.Millisecond},
		{10 * recheckShare, 25 * time.Second, 75 * time.Second},
	} {
		s := &Server{cfg: Config{PollInterval: 5 * time.Second}}
		s.npolls.Store(c.polls)
		for range 1000 {
			if d := s.recheckAfter(); d < c.from || d >= c.to {
				t.Fatalf("with %d polls waiting, a re-check after %s; want within [%s, %s)", c.polls, d, c.from, c.to)
			}
		}
	}
}
