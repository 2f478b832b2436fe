package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// bundle is what every case starts with: a store, a clock and a pool "p" with helpers.
type bundle struct {
	s   store.Store
	ctx context.Context
	now time.Time
	n   int
	// registered holds the workers registerWorker created: a claim needs its worker to exist.
	registered map[string]bool
}

func setup(t *testing.T, open Open) *bundle {
	t.Helper()
	b := &bundle{s: open(t), ctx: t.Context(), now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), registered: map[string]bool{}}
	b.pool(t, "p")
	return b
}

func (b *bundle) id(prefix string) string {
	b.n++
	return fmt.Sprintf("%s-%04d", prefix, b.n)
}

func (b *bundle) pool(t *testing.T, name string) {
	t.Helper()
	if err := b.s.CreatePool(b.ctx, api.Pool{Name: name, CreatedAt: b.now}); err != nil {
		t.Fatalf("CreatePool(%s): %v", name, err)
	}
}

func (b *bundle) enqueue(t *testing.T, spec api.OperationSpec) api.Operation {
	t.Helper()
	if spec.Pool == "" {
		spec.Pool = "p"
	}
	if spec.Script == "" {
		spec.Script = "echo hi"
	}
	op, err := b.s.CreateOperation(b.ctx, store.NewOperation{ID: b.id("op"), Spec: spec, CreatedAt: b.now})
	if err != nil {
		t.Fatalf("CreateOperation: %v", err)
	}
	return op
}

// claim claims for worker, registering it first if this bundle has not.
func (b *bundle) claim(t *testing.T, worker string, pools []string, caps ...string) *api.Lease {
	t.Helper()
	b.registerWorker(t, worker)
	l, err := b.s.Claim(b.ctx, store.ClaimParams{WorkerID: worker, Pools: pools, Capabilities: caps,
		LeaseID: b.id("lease"), Now: b.now, ExpiresAt: b.now.Add(time.Minute)})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return l
}

func (b *bundle) mustClaim(t *testing.T, worker string) *api.Lease {
	t.Helper()
	l := b.claim(t, worker, []string{"p"})
	if l == nil {
		t.Fatal("Claim returned nothing, want an operation")
	}
	return l
}

func ref(l *api.Lease, worker string, now time.Time) store.LeaseRef {
	return store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: worker, Now: now}
}

func (b *bundle) finish(t *testing.T, l *api.Lease, worker string, state api.State, exit int) (api.Operation, store.Changes) {
	t.Helper()
	op, ch, err := b.s.Finish(b.ctx, ref(l, worker, b.now), store.Result{State: state, ExitCode: &exit})
	if err != nil {
		t.Fatalf("Finish(%s, %s): %v", l.Operation.ID, state, err)
	}
	return op, ch
}

func (b *bundle) get(t *testing.T, id string) api.Operation {
	t.Helper()
	op, err := b.s.Operation(b.ctx, id)
	if err != nil {
		t.Fatalf("Operation(%s): %v", id, err)
	}
	return op
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func intp(i int) *int { return &i }

// registerWorker creates worker id (named id, in pool p, token hash "hash-"+id, healthy, heartbeated at b.now,
// room for 100 operations) unless this bundle did before.
func (b *bundle) registerWorker(t *testing.T, id string) {
	t.Helper()
	if b.registered[id] {
		return
	}
	b.registered[id] = true
	if err := b.s.CreateWorker(b.ctx, store.Worker{Worker: api.Worker{ID: id, Name: id, Pools: []string{"p"}, Version: "1",
		Capacity: 100, Healthy: true, RegisteredAt: b.now, LastHeartbeat: b.now}, TokenHash: []byte("hash-" + id), TokenID: "t"}); err != nil {
		t.Fatalf("CreateWorker(%s): %v", id, err)
	}
}

func sorted(s ...string) []string {
	sort.Strings(s)
	return s
}

func (b *bundle) deploy(t *testing.T, names ...string) api.Deployment {
	t.Helper()
	d := store.NewDeployment{ID: b.id("dep"), Name: "release", CreatedAt: b.now}
	for _, n := range names {
		d.Steps = append(d.Steps, store.NewOperation{ID: b.id("op"), Spec: api.OperationSpec{Name: n, Pool: "p", Script: "echo " + n}, CreatedAt: b.now})
	}
	dep, err := b.s.CreateDeployment(b.ctx, d)
	if err != nil {
		t.Fatalf("CreateDeployment: %v", err)
	}
	return dep
}

func (b *bundle) dep(t *testing.T, id string) (api.State, []api.State) {
	t.Helper()
	d, err := b.s.Deployment(b.ctx, id)
	if err != nil {
		t.Fatalf("Deployment(%s): %v", id, err)
	}
	var states []api.State
	for _, op := range d.Operations {
		states = append(states, op.State)
	}
	return d.State, states
}
