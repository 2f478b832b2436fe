package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// testQueueStats: every pool is listed (an empty one at 0); only claimable operations count; the first in
// line is dated from when it became claimable.
func testQueueStats(t *testing.T, b *bundle) {
	b.pool(t, "empty")
	stats := func() []store.PoolQueue {
		t.Helper()
		qs, err := b.s.QueueStats(b.ctx)
		if err != nil {
			t.Fatalf("QueueStats: %v", err)
		}
		return qs
	}
	if diff := cmp.Diff([]store.PoolQueue{{Pool: "empty"}, {Pool: "p"}}, stats()); diff != "" {
		t.Fatalf("nothing queued (-want +got):\n%s", diff)
	}

	d := b.deploy(t, "one", "two") // created at b.now: step one claimable, two waits
	b.now = b.now.Add(time.Minute)
	b.enqueue(t, api.OperationSpec{})
	if diff := cmp.Diff([]store.PoolQueue{{Pool: "empty"}, {Pool: "p", Depth: 2, FirstSince: d.CreatedAt}}, stats()); diff != "" {
		t.Fatalf("a deployment and an operation queued (-want +got):\n%s", diff)
	}

	l := b.mustClaim(t, "w") // step one, first in line
	b.now = b.now.Add(time.Minute)
	if diff := cmp.Diff([]store.PoolQueue{{Pool: "empty"}, {Pool: "p", Depth: 1, FirstSince: d.CreatedAt.Add(time.Minute)}}, stats()); diff != "" {
		t.Fatalf("step one leased (-want +got):\n%s", diff)
	}
	ended := b.now
	b.finish(t, l, "w", api.StateSucceeded, 0) // step two becomes claimable now, and is first in line (older seq)
	if diff := cmp.Diff([]store.PoolQueue{{Pool: "empty"}, {Pool: "p", Depth: 2, FirstSince: ended}}, stats()); diff != "" {
		t.Fatalf("step one ended (-want +got):\n%s", diff)
	}
	b.mustClaim(t, "w")
	b.mustClaim(t, "w")
	if diff := cmp.Diff([]store.PoolQueue{{Pool: "empty"}, {Pool: "p"}}, stats()); diff != "" {
		t.Fatalf("everything leased (-want +got):\n%s", diff)
	}
}
