package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// testExpireLeasesConcurrently: several servers sweep expired leases at the same moment (each runs the
// sweep on its own timer). Every expired operation is reported once, by one of them, and a deployment's
// lost step cancels the next step once: the sweep re-checks the lease in its statement, so running it twice
// at once changes nothing twice.
func testExpireLeasesConcurrently(t *testing.T, b *bundle) {
	const ops, sweepers = 60, 8
	var want []string
	for i := range ops {
		b.enqueue(t, api.OperationSpec{})
		want = append(want, b.mustClaim(t, fmt.Sprintf("w%d", i%3)).Operation.ID)
	}
	d := b.deploy(t, "one", "two")
	want = append(want, b.mustClaim(t, "w0").Operation.ID, d.Operations[1].ID)
	var mu sync.Mutex
	reported := map[string]int{}
	var wg sync.WaitGroup
	for range sweepers {
		wg.Go(func() {
			ch, err := b.s.ExpireLeases(b.ctx, b.now.Add(2*time.Minute))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ch.Ended {
				reported[id]++
			}
			if len(ch.Ready) > 0 {
				t.Errorf("a sweep made %+v ready; a lost step stops its deployment", ch.Ready)
			}
		})
	}
	wg.Wait()
	for _, id := range want {
		if reported[id] != 1 {
			t.Errorf("operation %s reported ended %d times by %d concurrent sweeps, want once", id, reported[id], sweepers)
		}
	}
	if len(reported) != len(want) {
		t.Errorf("%d operations reported ended, want %d", len(reported), len(want))
	}
	if st, steps := b.dep(t, d.ID); st != api.StateFailed || steps[0] != api.StateLost || steps[1] != api.StateCancelled {
		t.Errorf("deployment %s %v, want failed [lost cancelled]", st, steps)
	}
}
