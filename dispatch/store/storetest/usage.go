package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// testUsageSamples: a result's usage is kept on the operation, and the advice reads the newest measured
// operations of one pool (and name), with how long each ran.
func testUsageSamples(t *testing.T, b *bundle) {
	b.pool(t, "q")
	run := func(name, pool string, mem int64, ranFor time.Duration, usage bool) string {
		t.Helper()
		op := b.enqueue(t, api.OperationSpec{Name: name, Pool: pool})
		l := b.claim(t, "w", []string{pool})
		if l == nil || l.Operation.ID != op.ID {
			t.Fatalf("claim of %s = %+v", op.ID, l)
		}
		start := b.now
		if _, err := b.s.SetRunning(b.ctx, ref(l, "w", start), ""); err != nil {
			t.Fatal(err)
		}
		b.now = b.now.Add(ranFor)
		res := store.Result{State: api.StateSucceeded, ExitCode: intp(0)}
		if usage {
			res.Usage = &api.Usage{PeakMemoryBytes: mem, CPUSeconds: ranFor.Seconds() / 2, Source: api.UsageRusage}
		}
		got, _, err := b.s.Finish(b.ctx, ref(l, "w", b.now), res)
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(got.Usage, res.Usage) {
			t.Errorf("Finish returned usage %+v, want %+v", got.Usage, res.Usage)
		}
		if stored := b.get(t, op.ID); !cmp.Equal(stored.Usage, res.Usage) {
			t.Errorf("Operation(%s).Usage = %+v, want %+v", op.ID, stored.Usage, res.Usage)
		}
		return op.ID
	}
	b.registerWorker(t, "w")
	run("build", "p", 100, 2*time.Second, true)
	run("test", "p", 200, 4*time.Second, true)
	run("build", "p", 300, 6*time.Second, true)
	run("build", "p", 0, time.Second, false)  // not measured: left out
	run("build", "q", 400, time.Second, true) // another pool

	mems := func(f store.UsageFilter) []int64 {
		t.Helper()
		got, err := b.s.UsageSamples(b.ctx, f)
		if err != nil {
			t.Fatalf("UsageSamples(%+v): %v", f, err)
		}
		var out []int64
		for _, s := range got {
			if want := time.Duration(s.Usage.CPUSeconds * 2 * float64(time.Second)); s.Duration != want {
				t.Errorf("sample of %d bytes ran %v, want %v", s.Usage.PeakMemoryBytes, s.Duration, want)
			}
			out = append(out, s.Usage.PeakMemoryBytes)
		}
		return out
	}
	for _, tt := range []struct {
		f    store.UsageFilter
		want []int64
	}{
		{store.UsageFilter{Pool: "p", Limit: 10}, []int64{300, 200, 100}},
		{store.UsageFilter{Pool: "p", Limit: 2}, []int64{300, 200}},
		{store.UsageFilter{Pool: "p", Name: "build", Limit: 10}, []int64{300, 100}},
		{store.UsageFilter{Pool: "q", Limit: 10}, []int64{400}},
		{store.UsageFilter{Pool: "p", Name: "deploy", Limit: 10}, nil},
	} {
		if got := mems(tt.f); !cmp.Equal(got, tt.want) {
			t.Errorf("UsageSamples(%+v) peaks = %v, want %v", tt.f, got, tt.want)
		}
	}
	if _, err := b.s.UsageSamples(b.ctx, store.UsageFilter{Limit: 10}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("UsageSamples without a pool: error = %v, want ErrInvalid", err)
	}
}
