package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// testTouchWorkers: TouchWorkers sets the times of the workers whose stored last heartbeat is still the one
// the touch names, and leaves alone (and leaves out of its answer) a worker that heartbeated since and one that
// does not exist; it answers each touched worker's drain request.
func testTouchWorkers(t *testing.T, b *bundle) {
	for _, id := range []string{"idle", "drained", "moved"} {
		b.registerWorker(t, id)
	}
	if _, err := b.s.SetDrain(b.ctx, "drained", true); err != nil {
		t.Fatal(err)
	}
	moved := b.now.Add(time.Second) // a heartbeat through another server
	if _, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "moved", Now: moved}); err != nil {
		t.Fatal(err)
	}
	got, err := b.s.TouchWorkers(b.ctx, nil)
	if err != nil || len(got) != 0 {
		t.Errorf("TouchWorkers(none) = %v, %v; want nothing", got, err)
	}
	at, checked := b.now.Add(5*time.Second), b.now.Add(4*time.Second)
	got, err = b.s.TouchWorkers(b.ctx, []store.Touch{
		{WorkerID: "idle", Prev: b.now, At: at, LastCheck: checked},
		{WorkerID: "drained", Prev: b.now, At: at},
		{WorkerID: "moved", Prev: b.now, At: at, LastCheck: checked},
		{WorkerID: "gone", Prev: b.now, At: at},
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]bool{"idle": false, "drained": true}, got); diff != "" {
		t.Errorf("TouchWorkers answered (-want +got):\n%s", diff)
	}
	for _, c := range []struct {
		id        string
		heartbeat time.Time
		check     time.Time
	}{
		{"idle", at, checked},
		{"drained", at, time.Time{}},
		{"moved", moved, time.Time{}},
	} {
		w, err := b.s.Worker(b.ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		if !w.LastHeartbeat.Equal(c.heartbeat) || !w.LastCheck.Equal(c.check) {
			t.Errorf("worker %s: last heartbeat %s, last check %s; want %s, %s", c.id, w.LastHeartbeat, w.LastCheck, c.heartbeat, c.check)
		}
	}
}
