package storetest

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func testClaimOrderAndPools(t *testing.T, b *bundle) {
	b.pool(t, "q")
	if l := b.claim(t, "w", []string{"p"}); l != nil {
		t.Fatalf("empty queue gave %+v", l)
	}
	first := b.enqueue(t, api.OperationSpec{Name: "first"})
	inQ := b.enqueue(t, api.OperationSpec{Name: "in-q", Pool: "q"})
	second := b.enqueue(t, api.OperationSpec{Name: "second"})
	for _, want := range []api.Operation{first, second} {
		l := b.claim(t, "w", []string{"p"})
		if l == nil || l.Operation.ID != want.ID {
			t.Fatalf("claim = %+v, want %s", l, want.ID)
		}
		if l.Operation.State != api.StateLeased || l.Operation.WorkerID != "w" || !l.ExpiresAt.Equal(b.now.Add(time.Minute)) {
			t.Errorf("lease %+v: want state leased, worker w, expiry in a minute", l)
		}
	}
	if l := b.claim(t, "w", []string{"p"}); l != nil {
		t.Fatalf("pool p is empty but claim gave %s", l.Operation.ID)
	}
	l := b.claim(t, "w", []string{"p", "q"})
	if l == nil || l.Operation.ID != inQ.ID {
		t.Fatalf("claim over p and q = %+v, want %s", l, inQ.ID)
	}
}

func testClaimCapabilities(t *testing.T, b *bundle) {
	tests := []struct {
		required, has []string
		match         bool
	}{
		{nil, nil, true},
		{nil, []string{"kubernetes-job"}, true},
		{[]string{"docker"}, nil, false},
		{[]string{"docker"}, []string{"kubernetes-job"}, false},
		{[]string{"docker"}, []string{"kubernetes-job", "docker"}, true},
		{[]string{"a", "b"}, []string{"a"}, false},
		{[]string{"a", "b"}, []string{"b", "c", "a"}, true},
	}
	for i, tt := range tests {
		pool := fmt.Sprintf("caps-%d", i)
		b.pool(t, pool)
		op := b.enqueue(t, api.OperationSpec{Pool: pool, Capabilities: tt.required})
		l := b.claim(t, "w", []string{pool}, tt.has...)
		if got := l != nil; got != tt.match {
			t.Errorf("required %v, worker has %v: claimed = %v, want %v", tt.required, tt.has, got, tt.match)
		}
		if l != nil && l.Operation.ID != op.ID {
			t.Errorf("claimed %s, want %s", l.Operation.ID, op.ID)
		}
	}
}

func testClaimRequestID(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.registerWorker(t, "w2")
	a := b.enqueue(t, api.OperationSpec{})
	b.enqueue(t, api.OperationSpec{})
	p := store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: "req-1", LeaseID: "lease-a",
		Now: b.now, ExpiresAt: b.now.Add(time.Minute)}
	first, err := b.s.Claim(b.ctx, p)
	if err != nil || first == nil || first.Operation.ID != a.ID {
		t.Fatalf("first claim = %+v, %v", first, err)
	}
	p.LeaseID = "lease-b" // a retry carries the same request id; the server would mint another lease id
	again, err := b.s.Claim(b.ctx, p)
	if err != nil || again == nil {
		t.Fatalf("retried claim = %+v, %v", again, err)
	}
	if again.Operation.ID != a.ID || again.LeaseID != "lease-a" {
		t.Errorf("retried claim gave %s/%s, want the same lease %s/lease-a", again.Operation.ID, again.LeaseID, a.ID)
	}
	other := b.claim(t, "w", []string{"p"})
	if other == nil || other.Operation.ID == a.ID {
		t.Errorf("a new request got %+v, want the second operation", other)
	}
	// Another worker using the same request id gets its own operation, not w's.
	b.enqueue(t, api.OperationSpec{})
	p.WorkerID, p.LeaseID = "w2", "lease-c"
	theirs, err := b.s.Claim(b.ctx, p)
	if err != nil || theirs == nil || theirs.Operation.ID == a.ID {
		t.Errorf("worker w2 with w's request id got %+v, %v", theirs, err)
	}
}

func testClaimConcurrent(t *testing.T, b *bundle) {
	const ops, workers = 200, 8
	for range ops {
		b.enqueue(t, api.OperationSpec{})
	}
	for w := range workers {
		b.registerWorker(t, fmt.Sprintf("w%d", w))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		worker := fmt.Sprintf("w%d", w)
		wg.Go(func() {
			for i := 0; ; i++ {
				l, err := b.s.Claim(b.ctx, store.ClaimParams{WorkerID: worker, Pools: []string{"p"},
					LeaseID: fmt.Sprintf("%s-%d", worker, i), Now: b.now, ExpiresAt: b.now.Add(time.Minute)})
				if err != nil {
					errs <- err
					return
				}
				if l == nil {
					return
				}
				mu.Lock()
				if prev, dup := seen[l.Operation.ID]; dup {
					errs <- fmt.Errorf("operation %s leased twice: to %s and %s", l.Operation.ID, prev, worker)
				}
				seen[l.Operation.ID] = worker
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != ops {
		t.Errorf("%d operations leased, want %d", len(seen), ops)
	}
}

func testCreateLeased(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	older := b.enqueue(t, api.OperationSpec{Name: "older", Pool: "p"})
	vars := []api.Variable{{Name: "S", Value: "clear", Sensitive: true}}
	p := store.ClaimParams{WorkerID: "w", RequestID: "req-9", LeaseID: "lease-h", Now: b.now, ExpiresAt: b.now.Add(time.Minute)}
	l, err := b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: "op-handed", Spec: api.OperationSpec{Pool: "p", Script: "x", Variables: vars},
		CreatedAt: b.now}, p)
	if err != nil {
		t.Fatal(err)
	}
	if l.LeaseID != "lease-h" || l.Operation.State != api.StateLeased || l.Operation.WorkerID != "w" || !cmp.Equal(l.Operation.Variables, vars) ||
		!l.ExpiresAt.Equal(p.ExpiresAt) {
		t.Errorf("CreateLeasedOperation = %+v", l)
	}
	leases, err := b.s.Leases(b.ctx, "w", b.now)
	if err != nil || len(leases) != 1 {
		t.Fatalf("Leases = %+v, %v", leases, err)
	}
	if diff := cmp.Diff(*l, leases[0]); diff != "" {
		t.Errorf("the handed-off lease as listed (-returned +listed):\n%s", diff)
	}
	// A retry of the worker's lease request returns it; another worker gets the older queued operation.
	again, err := b.s.Claim(b.ctx, store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: "req-9", LeaseID: "x", Now: b.now, ExpiresAt: b.now.Add(time.Minute)})
	if err != nil || again == nil || again.LeaseID != "lease-h" {
		t.Errorf("retried claim = %+v, %v", again, err)
	}
	if other := b.claim(t, "w2", []string{"p"}); other == nil || other.Operation.ID != older.ID {
		t.Errorf("other worker claimed %+v, want %s", other, older.ID)
	}
	if none := b.claim(t, "w2", []string{"p"}); none != nil {
		t.Errorf("the handed-off operation was claimable: %s", none.Operation.ID)
	}
	if got := b.get(t, "op-handed"); got.Variables[0].Value != mask.Placeholder {
		t.Errorf("stored variables show %q", got.Variables[0].Value)
	}
	_, err = b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: "op-x", Spec: api.OperationSpec{Pool: "nope", Script: "x"}, CreatedAt: b.now}, p)
	wantErr(t, err, store.ErrNotFound)
}

func testEnqueueUnknownPool(t *testing.T, b *bundle) {
	_, err := b.s.CreateOperation(b.ctx, store.NewOperation{ID: "x", Spec: api.OperationSpec{Pool: "nope", Script: "x"}, CreatedAt: b.now})
	wantErr(t, err, store.ErrNotFound)
	_, err = b.s.CreateDeployment(b.ctx, store.NewDeployment{ID: "d", Name: "d", CreatedAt: b.now, Steps: []store.NewOperation{
		{ID: "s1", Spec: api.OperationSpec{Pool: "p", Script: "x"}}, {ID: "s2", Spec: api.OperationSpec{Pool: "nope", Script: "x"}}}})
	wantErr(t, err, store.ErrNotFound)
	if _, err := b.s.Deployment(b.ctx, "d"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused deployment was half stored: %v", err)
	}
}

func testSensitiveValues(t *testing.T, b *bundle) {
	vars := []api.Variable{{Name: "USER", Value: "deployer"}, {Name: "PASSWORD", Value: "hunter2", Sensitive: true},
		{Name: "KEY", Value: "k-123", Sensitive: true}}
	op := b.enqueue(t, api.OperationSpec{Variables: vars, Files: []api.File{{Path: "a.txt", Content: []byte("data"), Mode: 0o600}}})
	masked := []api.Variable{vars[0], {Name: "PASSWORD", Value: mask.Placeholder, Sensitive: true}, {Name: "KEY", Value: mask.Placeholder, Sensitive: true}}
	if diff := cmp.Diff(masked, op.Variables); diff != "" {
		t.Errorf("CreateOperation returned variables (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(masked, b.get(t, op.ID).Variables); diff != "" {
		t.Errorf("Operation shows variables (-want +got):\n%s", diff)
	}
	values, err := b.s.SensitiveValues(b.ctx, op.ID)
	sort.Strings(values)
	if err != nil || !cmp.Equal(values, []string{"hunter2", "k-123"}) {
		t.Errorf("SensitiveValues = %q, %v", values, err)
	}
	l := b.mustClaim(t, "w")
	if diff := cmp.Diff(vars, l.Operation.Variables); diff != "" {
		t.Errorf("the lease must carry values in clear (-want +got):\n%s", diff)
	}
	if len(l.Operation.Files) != 1 || string(l.Operation.Files[0].Content) != "data" || l.Operation.Script != "echo hi" {
		t.Errorf("lease lost the body: %+v", l.Operation)
	}
	b.finish(t, l, "w", api.StateSucceeded, 0)
	values, err = b.s.SensitiveValues(b.ctx, op.ID)
	if err != nil || len(values) != 0 {
		t.Errorf("after the end SensitiveValues = %q, %v; want them erased", values, err)
	}
	if diff := cmp.Diff(masked, b.get(t, op.ID).Variables); diff != "" {
		t.Errorf("after the end Operation shows variables (-want +got):\n%s", diff)
	}
}
