// Package storetest is the conformance suite of the dispatch store: every driver runs Run against a real
// database, so the rules in package store hold whichever database sits behind the seam.
package storetest

import (
	"bytes"
	"context"
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

// Open returns a fresh, empty store for one test; the driver closes it in t.Cleanup.
type Open func(t *testing.T) store.Store

// Run runs the whole suite. Each case gets its own store and runs in parallel.
func Run(t *testing.T, open Open) {
	cases := []struct {
		name string
		fn   func(t *testing.T, b *bundle)
	}{
		{"Pools", testPools},
		{"Tokens", testTokens},
		{"Workers", testWorkers},
		{"RemoveWorker", testRemoveWorker},
		{"RemoveWorkerStopsItsDeployment", testRemoveWorkerDeployment},
		{"RemovedWorkerLeasesNothing", testRemovedWorkerLeasesNothing},
		{"ClaimOrderAndPools", testClaimOrderAndPools},
		{"ClaimCapabilities", testClaimCapabilities},
		{"ClaimRequestIDReplay", testClaimRequestID},
		{"ClaimExactlyOnceConcurrently", testClaimConcurrent},
		{"CreateLeasedOperation", testCreateLeased},
		{"EnqueueUnknownPool", testEnqueueUnknownPool},
		{"SensitiveValues", testSensitiveValues},
		{"LeaseChecks", testLeaseChecks},
		{"SetRunning", testSetRunning},
		{"AppendLogs", testAppendLogs},
		{"Finish", testFinish},
		{"Cancel", testCancel},
		{"Heartbeat", testHeartbeat},
		{"ExpireLeases", testExpireLeases},
		{"DeploymentSucceeds", testDeploymentSucceeds},
		{"DeploymentStopsOnFailure", testDeploymentStopsOnFailure},
		{"DeploymentCancel", testDeploymentCancel},
		{"DeploymentLostStep", testDeploymentLostStep},
		{"Leases", testLeases},
		{"ListOperations", testListOperations},
		{"SettingsAndCharts", testSettingsAndCharts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, setup(t, open))
		})
	}
}

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

// ---- cases ----

func testPools(t *testing.T, b *bundle) {
	b.pool(t, "a-pool")
	wantErr(t, b.s.CreatePool(b.ctx, api.Pool{Name: "p", CreatedAt: b.now}), store.ErrExists)
	got, err := b.s.Pool(b.ctx, "a-pool")
	if err != nil || got.Name != "a-pool" || !got.CreatedAt.Equal(b.now) {
		t.Fatalf("Pool = %+v, %v", got, err)
	}
	_, err = b.s.Pool(b.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	pools, err := b.s.ListPools(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"a-pool", "p"}, names); diff != "" {
		t.Errorf("ListPools names (-want +got):\n%s", diff)
	}
}

func testTokens(t *testing.T, b *bundle) {
	tok := store.Token{ID: "tok-1", Hash: []byte("hash-1"), Pools: []string{"p"}, CreatedAt: b.now, ExpiresAt: b.now.Add(time.Hour)}
	if err := b.s.CreateToken(b.ctx, tok); err != nil {
		t.Fatal(err)
	}
	got, err := b.s.TokenByHash(b.ctx, []byte("hash-1"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tok, got); diff != "" {
		t.Errorf("TokenByHash (-want +got):\n%s", diff)
	}
	_, err = b.s.TokenByHash(b.ctx, []byte("other"))
	wantErr(t, err, store.ErrNotFound)
	revoked, err := b.s.RevokeToken(b.ctx, "tok-1", b.now.Add(time.Minute))
	if err != nil || revoked.RevokedAt == nil || !revoked.RevokedAt.Equal(b.now.Add(time.Minute)) {
		t.Fatalf("RevokeToken = %+v, %v", revoked, err)
	}
	again, err := b.s.RevokeToken(b.ctx, "tok-1", b.now.Add(time.Hour))
	if err != nil || !again.RevokedAt.Equal(b.now.Add(time.Minute)) {
		t.Errorf("second revoke moved the time: %+v, %v", again, err)
	}
	_, err = b.s.RevokeToken(b.ctx, "tok-x", b.now)
	wantErr(t, err, store.ErrNotFound)
	list, err := b.s.ListTokens(b.ctx)
	if err != nil || len(list) != 1 || list[0].RevokedAt == nil {
		t.Errorf("ListTokens = %+v, %v", list, err)
	}
}

func testWorkers(t *testing.T, b *bundle) {
	b.pool(t, "q")
	w := store.Worker{Worker: api.Worker{ID: "w1", Name: "one", Pools: []string{"p", "q"}, Version: "1.0",
		Capabilities: []string{"kubernetes-job"}, Capacity: 4, Healthy: true, RegisteredAt: b.now, LastHeartbeat: b.now},
		TokenHash: []byte("wh1"), TokenID: "tok-1"}
	if err := b.s.CreateWorker(b.ctx, w); err != nil {
		t.Fatal(err)
	}
	w2 := w
	w2.ID, w2.TokenHash, w2.Pools = "w2", []byte("wh2"), []string{"q"}
	if err := b.s.CreateWorker(b.ctx, w2); err != nil {
		t.Fatal(err)
	}
	got, err := b.s.WorkerByTokenHash(b.ctx, []byte("wh1"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, got); diff != "" {
		t.Errorf("WorkerByTokenHash (-want +got):\n%s", diff)
	}
	_, err = b.s.WorkerByTokenHash(b.ctx, []byte("zz"))
	wantErr(t, err, store.ErrNotFound)
	inP, err := b.s.PoolWorkers(b.ctx, "p")
	if err != nil || len(inP) != 1 || inP[0].ID != "w1" {
		t.Errorf("PoolWorkers(p) = %+v, %v", inP, err)
	}
	inQ, err := b.s.PoolWorkers(b.ctx, "q")
	if err != nil || len(inQ) != 2 {
		t.Errorf("PoolWorkers(q) = %d workers, %v; want 2", len(inQ), err)
	}
	all, err := b.s.ListWorkers(b.ctx)
	if err != nil || len(all) != 2 {
		t.Errorf("ListWorkers = %d, %v", len(all), err)
	}
	d, err := b.s.SetDrain(b.ctx, "w1", true)
	if err != nil || !d.DrainRequested {
		t.Errorf("SetDrain = %+v, %v", d, err)
	}
	_, err = b.s.SetDrain(b.ctx, "nope", true)
	wantErr(t, err, store.ErrNotFound)
	_, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "nope", Now: b.now})
	wantErr(t, err, store.ErrNotFound)
}

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

func testLeaseChecks(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	tests := []struct {
		name string
		ref  store.LeaseRef
		want error
	}{
		{"other worker", store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: "intruder", Now: b.now}, store.ErrNotLeased},
		{"wrong lease id", store.LeaseRef{OperationID: l.Operation.ID, LeaseID: "forged", WorkerID: "w", Now: b.now}, store.ErrNotLeased},
		{"unknown operation", store.LeaseRef{OperationID: "op-none", LeaseID: l.LeaseID, WorkerID: "w", Now: b.now}, store.ErrNotFound},
		{"expired", ref(l, "w", b.now.Add(2*time.Minute)), store.ErrLeaseLost},
	}
	for _, tt := range tests {
		_, err := b.s.AppendLogs(b.ctx, tt.ref, []api.LogLine{{Seq: 1, Time: b.now, Stream: "stdout", Text: "x"}})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: AppendLogs error = %v, want %v", tt.name, err, tt.want)
		}
		_, err = b.s.SetRunning(b.ctx, tt.ref, "")
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: SetRunning error = %v, want %v", tt.name, err, tt.want)
		}
		_, _, err = b.s.Finish(b.ctx, tt.ref, store.Result{State: api.StateFailed, ExitCode: intp(1)})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Finish error = %v, want %v", tt.name, err, tt.want)
		}
	}
	if op := b.get(t, l.Operation.ID); op.State != api.StateLeased {
		t.Errorf("refused calls changed the operation: %s", op.State)
	}
}

func testSetRunning(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	for range 2 {
		op, err := b.s.SetRunning(b.ctx, ref(l, "w", b.now), "job created")
		if err != nil || op.State != api.StateRunning || op.StartedAt == nil || op.Message != "job created" {
			t.Fatalf("SetRunning = %+v, %v", op, err)
		}
	}
}

func testAppendLogs(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	r := ref(l, "w", b.now)
	line := func(seq int64) api.LogLine {
		return api.LogLine{Seq: seq, Time: b.now.Add(time.Duration(seq) * time.Millisecond), Stream: api.StreamStdout, Text: fmt.Sprintf("line %d", seq)}
	}
	note := api.LogLine{Seq: 0, Time: b.now, Stream: api.StreamSystem, Text: "waiting for capacity"}
	steps := []struct {
		lines []api.LogLine
		want  api.AppendLogsResponse
	}{
		{[]api.LogLine{line(1), line(2)}, api.AppendLogsResponse{LastSeq: 2}},
		{[]api.LogLine{line(1), line(2)}, api.AppendLogsResponse{LastSeq: 2}},          // a retried batch
		{[]api.LogLine{line(5), note}, api.AppendLogsResponse{LastSeq: 2, Gap: true}},  // 3 and 4 missing
		{[]api.LogLine{line(3), note}, api.AppendLogsResponse{LastSeq: 3, Gap: true}},  // 4 still missing
		{[]api.LogLine{line(4), line(5), line(6)}, api.AppendLogsResponse{LastSeq: 6}}, // filled, 5 again
		{nil, api.AppendLogsResponse{LastSeq: 6}},                                      // an empty batch asks where we are
		{[]api.LogLine{line(3), line(2), line(7)}, api.AppendLogsResponse{LastSeq: 7}}, // old lines again, one new
	}
	for i, st := range steps {
		got, err := b.s.AppendLogs(b.ctx, r, st.lines)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got != st.want {
			t.Errorf("step %d: AppendLogs = %+v, want %+v", i, got, st.want)
		}
	}
	lines, err := b.s.Logs(b.ctx, l.Operation.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	notes := 0
	for i, ln := range lines {
		if i > 0 && ln.Pos <= lines[i-1].Pos {
			t.Errorf("positions not increasing: %d after %d", ln.Pos, lines[i-1].Pos)
		}
		if ln.Seq == 0 {
			notes++
			continue
		}
		seqs = append(seqs, ln.Seq)
		if ln.Text != fmt.Sprintf("line %d", ln.Seq) || !ln.Time.Equal(line(ln.Seq).Time) || ln.Stream != api.StreamStdout {
			t.Errorf("stored line %+v does not match what was sent", ln)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if diff := cmp.Diff([]int64{1, 2, 3, 4, 5, 6, 7}, seqs); diff != "" {
		t.Errorf("each seq must be stored once (-want +got):\n%s", diff)
	}
	if notes != 2 {
		t.Errorf("%d worker notes stored, want 2 (seq 0 lines are appended as they come)", notes)
	}
	// Resuming from a cursor returns only what follows it.
	rest, err := b.s.Logs(b.ctx, l.Operation.ID, lines[3].Pos, 2)
	if err != nil || len(rest) != 2 || rest[0].Pos != lines[4].Pos {
		t.Errorf("Logs(after %d, 2) = %+v, %v", lines[3].Pos, rest, err)
	}
	if leases, err := b.s.Leases(b.ctx, "w", b.now); err != nil || len(leases) != 1 || leases[0].LastSeq != 7 {
		t.Errorf("Leases = %+v, %v; want last_seq 7", leases, err)
	}
}

func testFinish(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	r := ref(l, "w", b.now)
	if _, err := b.s.AppendLogs(b.ctx, r, []api.LogLine{{Seq: 1, Time: b.now, Stream: "stdout", Text: "a"}}); err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name string
		res  store.Result
		want error
	}{
		{"succeeded without an exit code", store.Result{State: api.StateSucceeded, LastSeq: 1}, store.ErrInvalid},
		{"succeeded with exit code 3", store.Result{State: api.StateSucceeded, ExitCode: intp(3), LastSeq: 1}, store.ErrInvalid},
		{"state lost", store.Result{State: api.StateLost, LastSeq: 1}, store.ErrInvalid},
		{"state running", store.Result{State: api.StateRunning, LastSeq: 1}, store.ErrInvalid},
	}
	for _, tt := range refusals {
		if _, _, err := b.s.Finish(b.ctx, r, tt.res); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
	_, _, err := b.s.Finish(b.ctx, r, store.Result{State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 3})
	var missing *store.MissingLinesError
	if !errors.As(err, &missing) || missing.Have != 1 || missing.Want != 3 {
		t.Fatalf("result beyond the stored log: error = %v, want MissingLinesError{1, 3}", err)
	}
	res := store.Result{State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 1, Message: "done"}
	op, ch, err := b.s.Finish(b.ctx, r, res)
	if err != nil || op.State != api.StateSucceeded || *op.ExitCode != 0 || op.FinishedAt == nil || op.Message != "done" {
		t.Fatalf("Finish = %+v, %v", op, err)
	}
	if !cmp.Equal(ch.Ended, []string{l.Operation.ID}) {
		t.Errorf("Changes.Ended = %v", ch.Ended)
	}
	// A retried result is accepted and changes nothing.
	if again, ch, err := b.s.Finish(b.ctx, r, res); err != nil || again.State != api.StateSucceeded || len(ch.Ended) != 0 {
		t.Errorf("replayed result = %+v, %+v, %v", again, ch, err)
	}
	// A different result after the end is refused, and so are logs.
	if _, _, err := b.s.Finish(b.ctx, r, store.Result{State: api.StateFailed, ExitCode: intp(1)}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("a second, different result: error = %v, want ErrLeaseLost", err)
	}
	if _, err := b.s.AppendLogs(b.ctx, r, []api.LogLine{{Seq: 2, Time: b.now, Stream: "stdout", Text: "late"}}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("logs after the end: error = %v, want ErrLeaseLost", err)
	}
	if l := b.claim(t, "w2", []string{"p"}); l != nil {
		t.Errorf("a finished operation was leased again: %s", l.Operation.ID)
	}
}

func testCancel(t *testing.T, b *bundle) {
	queued := b.enqueue(t, api.OperationSpec{})
	op, ch, err := b.s.Cancel(b.ctx, queued.ID, b.now)
	if err != nil || op.State != api.StateCancelled || op.FinishedAt == nil || !cmp.Equal(ch.Ended, []string{queued.ID}) {
		t.Fatalf("Cancel(queued) = %+v, %+v, %v", op, ch, err)
	}
	if l := b.claim(t, "w", []string{"p"}); l != nil {
		t.Fatalf("a cancelled operation was leased: %s", l.Operation.ID)
	}
	_, _, err = b.s.Cancel(b.ctx, queued.ID, b.now)
	wantErr(t, err, store.ErrFinished)
	_, _, err = b.s.Cancel(b.ctx, "op-none", b.now)
	wantErr(t, err, store.ErrNotFound)

	b.enqueue(t, api.OperationSpec{})
	l := b.mustClaim(t, "w")
	op, ch, err = b.s.Cancel(b.ctx, l.Operation.ID, b.now)
	if err != nil || op.State != api.StateLeased || !op.CancelRequested || len(ch.Ended) != 0 {
		t.Fatalf("Cancel(leased) = %+v, %+v, %v", op, ch, err)
	}
	b.registerWorker(t, "w")
	hb, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: b.now, LeaseExpiresAt: b.now.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Running: []string{l.Operation.ID}}})
	if err != nil || !cmp.Equal(hb.Cancel, []string{l.Operation.ID}) {
		t.Fatalf("heartbeat after a cancel request = %+v, %v", hb, err)
	}
	op, _, err = b.s.Finish(b.ctx, ref(l, "w", b.now), store.Result{State: api.StateCancelled, Message: "cancelled by request"})
	if err != nil || op.State != api.StateCancelled {
		t.Errorf("Finish(cancelled) = %+v, %v", op, err)
	}
}

// registerWorker creates worker id (named id, in pool p, token hash "hash-"+id) unless this bundle did before.
func (b *bundle) registerWorker(t *testing.T, id string) {
	t.Helper()
	if b.registered[id] {
		return
	}
	b.registered[id] = true
	if err := b.s.CreateWorker(b.ctx, store.Worker{Worker: api.Worker{ID: id, Name: id, Pools: []string{"p"}, Version: "1",
		Capacity: 1, Healthy: true, RegisteredAt: b.now, LastHeartbeat: b.now}, TokenHash: []byte("hash-" + id), TokenID: "t"}); err != nil {
		t.Fatalf("CreateWorker(%s): %v", id, err)
	}
}

func testHeartbeat(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.registerWorker(t, "other")
	b.enqueue(t, api.OperationSpec{})
	b.enqueue(t, api.OperationSpec{})
	b.enqueue(t, api.OperationSpec{})
	listed := b.mustClaim(t, "w")
	unlisted := b.mustClaim(t, "w")
	theirs := b.mustClaim(t, "other")
	later := b.now.Add(50 * time.Second)
	hb, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: later, LeaseExpiresAt: later.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Version: "2.0", Capacity: 3, Capabilities: []string{"kubernetes-job"},
			Running: []string{listed.Operation.ID, theirs.Operation.ID, "op-unknown"}, Health: api.Health{OK: false, Message: "api slow"}, Draining: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{theirs.Operation.ID, "op-unknown"}
	sort.Strings(want)
	if diff := cmp.Diff(want, hb.Cancel); diff != "" {
		t.Errorf("Cancel lists operations the worker runs but does not hold (-want +got):\n%s", diff)
	}
	leases, err := b.s.Leases(b.ctx, "w", later)
	if err != nil || len(leases) != 2 {
		t.Fatalf("Leases = %+v, %v", leases, err)
	}
	for _, l := range leases {
		wantExp := b.now.Add(time.Minute)
		if l.Operation.ID == listed.Operation.ID {
			wantExp = later.Add(time.Minute)
		}
		if !l.ExpiresAt.Equal(wantExp) {
			t.Errorf("lease of %s expires %s, want %s (only listed leases are renewed)", l.Operation.ID, l.ExpiresAt, wantExp)
		}
	}
	if other, _ := b.s.Leases(b.ctx, "other", later); len(other) != 1 || !other[0].ExpiresAt.Equal(b.now.Add(time.Minute)) {
		t.Errorf("w's heartbeat renewed another worker's lease: %+v", other)
	}
	_ = unlisted
	ws, _ := b.s.ListWorkers(b.ctx)
	for _, w := range ws {
		if w.ID == "w" && (w.Version != "2.0" || w.Capacity != 3 || w.Running != 3 || w.Healthy || w.HealthMessage != "api slow" ||
			!w.Draining || !w.LastHeartbeat.Equal(later)) {
			t.Errorf("worker after heartbeat = %+v", w.Worker)
		}
	}
	if _, err := b.s.SetDrain(b.ctx, "w", true); err != nil {
		t.Fatal(err)
	}
	hb, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: later, LeaseExpiresAt: later.Add(time.Minute)})
	if err != nil || !hb.Drain {
		t.Errorf("heartbeat after a drain request = %+v, %v", hb, err)
	}
	// A lease that expired is not renewed by a late heartbeat: the worker is told to stop it.
	late := b.now.Add(5 * time.Minute)
	hb, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: late, LeaseExpiresAt: late.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Running: []string{listed.Operation.ID}}})
	if err != nil || !cmp.Equal(hb.Cancel, sorted(listed.Operation.ID, unlisted.Operation.ID)) {
		t.Errorf("late heartbeat = %+v, %v; want both expired leases cancelled", hb, err)
	}
}

func sorted(s ...string) []string {
	sort.Strings(s)
	return s
}

func testExpireLeases(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.enqueue(t, api.OperationSpec{})
	b.enqueue(t, api.OperationSpec{})
	kept := b.mustClaim(t, "w")
	dropped := b.mustClaim(t, "w")
	at := b.now.Add(40 * time.Second)
	if _, err := b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: at, LeaseExpiresAt: at.Add(time.Minute),
		HeartbeatRequest: api.HeartbeatRequest{Running: []string{kept.Operation.ID}}}); err != nil {
		t.Fatal(err)
	}
	ch, err := b.s.ExpireLeases(b.ctx, b.now.Add(30*time.Second))
	if err != nil || len(ch.Ended) != 0 {
		t.Fatalf("nothing has expired yet, but ExpireLeases = %+v, %v", ch, err)
	}
	ch, err = b.s.ExpireLeases(b.ctx, b.now.Add(61*time.Second))
	if err != nil || !cmp.Equal(ch.Ended, []string{dropped.Operation.ID}) {
		t.Fatalf("ExpireLeases = %+v, %v; want only %s", ch, err, dropped.Operation.ID)
	}
	op := b.get(t, dropped.Operation.ID)
	if op.State != api.StateLost || op.FinishedAt == nil || op.Message == "" {
		t.Errorf("expired operation = %+v, want lost with a message", op)
	}
	if got := b.get(t, kept.Operation.ID); got.State != api.StateLeased {
		t.Errorf("renewed operation = %s, want leased", got.State)
	}
	// Lost is final: never leased again, and the old lease is refused.
	if l := b.claim(t, "w2", []string{"p"}); l != nil {
		t.Errorf("a lost operation was leased again: %s", l.Operation.ID)
	}
	_, _, err = b.s.Finish(b.ctx, ref(dropped, "w", b.now), store.Result{State: api.StateSucceeded, ExitCode: intp(0)})
	var lost *store.LeaseLostError
	if !errors.As(err, &lost) || !lost.Expired {
		t.Errorf("result on a lost operation: error = %v, want an expired LeaseLostError", err)
	}
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

func testDeploymentSucceeds(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two", "three")
	if d.State != api.StateQueued || len(d.Operations) != 3 || d.Operations[2].Step != 3 {
		t.Fatalf("CreateDeployment = %+v", d)
	}
	for i, want := range d.Operations {
		l := b.mustClaim(t, "w")
		if l.Operation.ID != want.ID || l.Operation.Step != i+1 || l.Operation.DeploymentID != d.ID {
			t.Fatalf("step %d: leased %s (step %d), want %s", i+1, l.Operation.ID, l.Operation.Step, want.ID)
		}
		if extra := b.claim(t, "w2", []string{"p"}); extra != nil {
			t.Fatalf("step %d: the next step %s was claimable before this one ended", i+1, extra.Operation.ID)
		}
		if st, _ := b.dep(t, d.ID); st != api.StateRunning {
			t.Errorf("step %d: deployment %s, want running", i+1, st)
		}
		_, ch := b.finish(t, l, "w", api.StateSucceeded, 0)
		if i < 2 && (len(ch.Ready) != 1 || ch.Ready[0].ID != d.Operations[i+1].ID || ch.Ready[0].Pool != "p") {
			t.Errorf("step %d: Changes.Ready = %+v, want the next step", i+1, ch.Ready)
		}
	}
	if st, _ := b.dep(t, d.ID); st != api.StateSucceeded {
		t.Errorf("deployment %s, want succeeded", st)
	}
}

func testDeploymentStopsOnFailure(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two", "three")
	b.finish(t, b.mustClaim(t, "w"), "w", api.StateSucceeded, 0)
	_, ch := b.finish(t, b.mustClaim(t, "w"), "w", api.StateFailed, 2)
	if len(ch.Ready) != 0 || !cmp.Equal(ch.Ended, []string{d.Operations[1].ID, d.Operations[2].ID}) {
		t.Errorf("Changes = %+v, want steps 2 and 3 ended", ch)
	}
	st, steps := b.dep(t, d.ID)
	if st != api.StateFailed || !cmp.Equal(steps, []api.State{api.StateSucceeded, api.StateFailed, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want failed [succeeded failed cancelled]", st, steps)
	}
	if msg := b.get(t, d.Operations[2].ID).Message; msg != "not run: step 2 (two) ended failed" {
		t.Errorf("step 3 message = %q", msg)
	}
	if l := b.claim(t, "w", []string{"p"}); l != nil {
		t.Errorf("a cancelled step was leased: %s", l.Operation.ID)
	}
}

func testDeploymentCancel(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two")
	l := b.mustClaim(t, "w")
	got, ch, err := b.s.CancelDeployment(b.ctx, d.ID, b.now)
	if err != nil || !cmp.Equal(ch.Ended, []string{d.Operations[1].ID}) || got.State != api.StateRunning {
		t.Fatalf("CancelDeployment = %+v, %+v, %v", got, ch, err)
	}
	if !b.get(t, l.Operation.ID).CancelRequested {
		t.Error("the running step has no cancel request")
	}
	b.finish(t, l, "w", api.StateCancelled, 143)
	if st, steps := b.dep(t, d.ID); st != api.StateCancelled || !cmp.Equal(steps, []api.State{api.StateCancelled, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want cancelled", st, steps)
	}
	_, _, err = b.s.CancelDeployment(b.ctx, d.ID, b.now)
	wantErr(t, err, store.ErrFinished)
	_, _, err = b.s.CancelDeployment(b.ctx, "dep-none", b.now)
	wantErr(t, err, store.ErrNotFound)

	// Cancelling a step that is still queued cancels the rest too.
	d2 := b.deploy(t, "a", "b")
	if _, _, err := b.s.Cancel(b.ctx, d2.Operations[0].ID, b.now); err != nil {
		t.Fatal(err)
	}
	if st, steps := b.dep(t, d2.ID); st != api.StateCancelled || !cmp.Equal(steps, []api.State{api.StateCancelled, api.StateCancelled}) {
		t.Errorf("deployment after cancelling its queued first step: %s %v", st, steps)
	}
}

func testDeploymentLostStep(t *testing.T, b *bundle) {
	d := b.deploy(t, "one", "two")
	b.mustClaim(t, "w")
	ch, err := b.s.ExpireLeases(b.ctx, b.now.Add(2*time.Minute))
	if err != nil || len(ch.Ended) != 2 {
		t.Fatalf("ExpireLeases = %+v, %v", ch, err)
	}
	if st, steps := b.dep(t, d.ID); st != api.StateFailed || !cmp.Equal(steps, []api.State{api.StateLost, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want failed [lost cancelled]", st, steps)
	}
}

func testLeases(t *testing.T, b *bundle) {
	b.enqueue(t, api.OperationSpec{Variables: []api.Variable{{Name: "S", Value: "v", Sensitive: true}}})
	b.enqueue(t, api.OperationSpec{})
	l1 := b.mustClaim(t, "w")
	l2 := b.mustClaim(t, "w")
	b.finish(t, l2, "w", api.StateFailed, 1)
	leases, err := b.s.Leases(b.ctx, "w", b.now)
	if err != nil || len(leases) != 1 {
		t.Fatalf("Leases = %+v, %v; want only the live one", leases, err)
	}
	if diff := cmp.Diff(*l1, leases[0]); diff != "" {
		t.Errorf("Leases[0] differs from the lease granted (-want +got):\n%s", diff)
	}
	if none, _ := b.s.Leases(b.ctx, "w", b.now.Add(time.Hour)); len(none) != 0 {
		t.Errorf("an expired lease is listed: %+v", none)
	}
}

func testListOperations(t *testing.T, b *bundle) {
	b.pool(t, "q")
	a := b.enqueue(t, api.OperationSpec{Name: "a", Image: "alpine:3", Script: "big script"})
	bq := b.enqueue(t, api.OperationSpec{Name: "b", Pool: "q"})
	c := b.enqueue(t, api.OperationSpec{Name: "c"})
	b.mustClaim(t, "w")
	tests := []struct {
		f    store.OperationFilter
		want []string
	}{
		{store.OperationFilter{}, []string{c.ID, bq.ID, a.ID}},
		{store.OperationFilter{Limit: 2}, []string{c.ID, bq.ID}},
		{store.OperationFilter{Pool: "q"}, []string{bq.ID}},
		{store.OperationFilter{State: api.StateLeased}, []string{a.ID}},
		{store.OperationFilter{WorkerID: "w"}, []string{a.ID}},
		{store.OperationFilter{State: api.StateQueued, Pool: "p"}, []string{c.ID}},
	}
	for _, tt := range tests {
		ops, err := b.s.ListOperations(b.ctx, tt.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, op := range ops {
			ids = append(ids, op.ID)
			if op.Script != "" || op.Files != nil || op.Variables != nil {
				t.Errorf("a list carries the body of %s", op.ID)
			}
		}
		if diff := cmp.Diff(tt.want, ids); diff != "" {
			t.Errorf("ListOperations(%+v) (-want +got):\n%s", tt.f, diff)
		}
	}
	if got := b.get(t, a.ID); got.Script != "big script" || got.Image != "alpine:3" || got.Name != "a" {
		t.Errorf("Operation = %+v", got)
	}
	sum, err := b.s.OperationSummary(b.ctx, a.ID)
	if err != nil || sum.Script != "" || sum.State != api.StateLeased || sum.Image != "alpine:3" {
		t.Errorf("OperationSummary = %+v, %v", sum, err)
	}
	_, err = b.s.OperationSummary(b.ctx, "op-none")
	wantErr(t, err, store.ErrNotFound)
}

func testSettingsAndCharts(t *testing.T, b *bundle) {
	_, err := b.s.Setting(b.ctx, "desired_version")
	wantErr(t, err, store.ErrNotFound)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if err := b.s.SetSetting(b.ctx, "desired_version", v); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := b.s.Setting(b.ctx, "desired_version"); err != nil || v != "1.1.0" {
		t.Errorf("Setting = %q, %v", v, err)
	}
	data := bytes.Repeat([]byte{0x1f, 0x8b, 0}, 1000)
	c := api.Chart{Version: "1.1.0", SHA256: "abc", Size: int64(len(data)), UploadedAt: b.now}
	if err := b.s.PutChart(b.ctx, c, data); err != nil {
		t.Fatal(err)
	}
	got, gotData, err := b.s.Chart(b.ctx, "1.1.0")
	if err != nil || !bytes.Equal(gotData, data) || got != c {
		t.Errorf("Chart = %+v (%d bytes), %v", got, len(gotData), err)
	}
	_, _, err = b.s.Chart(b.ctx, "9.9.9")
	wantErr(t, err, store.ErrNotFound)
}

// ---- removing workers ----

func testRemoveWorker(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.registerWorker(t, "other")
	leased := b.enqueue(t, api.OperationSpec{Name: "leased", Variables: []api.Variable{{Name: "S", Value: "v", Sensitive: true}}})
	running := b.enqueue(t, api.OperationSpec{Name: "running"})
	done := b.enqueue(t, api.OperationSpec{Name: "done"})
	theirs := b.enqueue(t, api.OperationSpec{Name: "theirs"})
	lLeased, lRunning, lDone := b.mustClaim(t, "w"), b.mustClaim(t, "w"), b.mustClaim(t, "w")
	lTheirs := b.mustClaim(t, "other")
	if lLeased.Operation.ID != leased.ID || lRunning.Operation.ID != running.ID || lDone.Operation.ID != done.ID || lTheirs.Operation.ID != theirs.ID {
		t.Fatal("claims out of order")
	}
	if _, err := b.s.SetRunning(b.ctx, ref(lRunning, "w", b.now), "job created"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.s.Cancel(b.ctx, running.ID, b.now); err != nil {
		t.Fatal(err)
	}
	b.finish(t, lDone, "w", api.StateSucceeded, 0)
	queued := b.enqueue(t, api.OperationSpec{Name: "queued"})

	at := b.now.Add(time.Second)
	got, err := b.s.RemoveWorker(b.ctx, "w", at)
	if err != nil {
		t.Fatalf("RemoveWorker: %v", err)
	}
	if got.Worker.ID != "w" || got.Worker.Name != "w" || !bytes.Equal(got.Worker.TokenHash, []byte("hash-w")) {
		t.Errorf("RemoveWorker returned worker %+v, want w as stored", got.Worker)
	}
	if diff := cmp.Diff([]string{leased.ID, running.ID}, got.Lost); diff != "" {
		t.Errorf("Lost (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{leased.ID, running.ID}, got.Changes.Ended); diff != "" || len(got.Changes.Ready) != 0 {
		t.Errorf("Changes = %+v, want the two lost operations ended and nothing ready (%s)", got.Changes, diff)
	}

	// The token no longer authenticates, and the worker is in no list.
	_, err = b.s.WorkerByTokenHash(b.ctx, []byte("hash-w"))
	wantErr(t, err, store.ErrNotFound)
	all, err := b.s.ListWorkers(b.ctx)
	if err != nil || len(all) != 1 || all[0].ID != "other" {
		t.Errorf("ListWorkers after removing w = %+v, %v; want only other", all, err)
	}
	if inP, err := b.s.PoolWorkers(b.ctx, "p"); err != nil || len(inP) != 1 || inP[0].ID != "other" {
		t.Errorf("PoolWorkers(p) after removing w = %+v, %v; want only other", inP, err)
	}

	// Its operations ended as lost, saying whose and why; the rest are untouched.
	for _, tc := range []struct {
		id, suffix string
	}{{leased.ID, "not run again"}, {running.ID, "not run again (a cancel had been requested)"}} {
		op := b.get(t, tc.id)
		want := "lost: worker w (w) was removed while it held this operation; its result is unknown and it is " + tc.suffix
		if op.State != api.StateLost || op.Message != want || op.FinishedAt == nil || !op.FinishedAt.Equal(at) || op.WorkerID != "w" {
			t.Errorf("operation %s after its worker was removed = %s %q finished %v worker %q; want lost %q at %s, worker w",
				tc.id, op.State, op.Message, op.FinishedAt, op.WorkerID, want, at)
		}
	}
	if v, err := b.s.SensitiveValues(b.ctx, leased.ID); err != nil || len(v) != 0 {
		t.Errorf("sensitive values of a lost operation = %q, %v; want erased", v, err)
	}
	if st := b.get(t, done.ID).State; st != api.StateSucceeded {
		t.Errorf("a finished operation of the removed worker became %s", st)
	}
	if op := b.get(t, theirs.ID); op.State != api.StateLeased || op.WorkerID != "other" {
		t.Errorf("another worker's operation became %s (worker %q)", op.State, op.WorkerID)
	}
	if st := b.get(t, queued.ID).State; st != api.StateQueued {
		t.Errorf("a queued operation became %s", st)
	}
	if l := b.claim(t, "other", []string{"p"}); l == nil || l.Operation.ID != queued.ID {
		t.Errorf("the queued operation is not claimable by another worker: %+v", l)
	}

	// The removed worker's old leases are gone, and it can do nothing more.
	if leases, err := b.s.Leases(b.ctx, "w", at); err != nil || len(leases) != 0 {
		t.Errorf("Leases of a removed worker = %+v, %v", leases, err)
	}
	_, _, err = b.s.Finish(b.ctx, ref(lRunning, "w", at), store.Result{State: api.StateSucceeded, ExitCode: intp(0)})
	var lost *store.LeaseLostError
	if !errors.As(err, &lost) {
		t.Errorf("a result on a lease ended by the removal: %v, want a LeaseLostError", err)
	}
	_, err = b.s.Heartbeat(b.ctx, store.Heartbeat{WorkerID: "w", Now: at, LeaseExpiresAt: at.Add(time.Minute)})
	wantErr(t, err, store.ErrNotFound)
	_, err = b.s.SetDrain(b.ctx, "w", true)
	wantErr(t, err, store.ErrNotFound)

	// Removing twice, or a worker that never was, is not found; nothing changes.
	_, err = b.s.RemoveWorker(b.ctx, "w", at)
	wantErr(t, err, store.ErrNotFound)
	_, err = b.s.RemoveWorker(b.ctx, "nope", at)
	wantErr(t, err, store.ErrNotFound)
	if op := b.get(t, theirs.ID); op.State != api.StateLeased {
		t.Errorf("a failed removal changed another worker's operation to %s", op.State)
	}
}

// A removed worker's deployment step is lost and the deployment stops, as when a lease expires.
func testRemoveWorkerDeployment(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	d := b.deploy(t, "one", "two", "three")
	b.finish(t, b.mustClaim(t, "w"), "w", api.StateSucceeded, 0)
	b.mustClaim(t, "w")
	got, err := b.s.RemoveWorker(b.ctx, "w", b.now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{d.Operations[1].ID}, got.Lost); diff != "" {
		t.Errorf("Lost (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{d.Operations[1].ID, d.Operations[2].ID}, got.Changes.Ended); diff != "" {
		t.Errorf("Changes.Ended (-want +got):\n%s", diff)
	}
	st, steps := b.dep(t, d.ID)
	if st != api.StateFailed || !cmp.Equal(steps, []api.State{api.StateSucceeded, api.StateLost, api.StateCancelled}) {
		t.Errorf("deployment %s %v, want failed [succeeded lost cancelled]", st, steps)
	}
	if msg := b.get(t, d.Operations[2].ID).Message; msg != "not run: step 2 (two) ended lost" {
		t.Errorf("step 3 message = %q", msg)
	}
}

// Nothing is leased to a worker that does not exist: not by a claim (a removed worker's long-poll still in
// flight), not by a hand-off, not by a request id replay.
func testRemovedWorkerLeasesNothing(t *testing.T, b *bundle) {
	b.registerWorker(t, "w")
	b.enqueue(t, api.OperationSpec{})
	p := store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, RequestID: "req-1", LeaseID: "lease-1", Now: b.now, ExpiresAt: b.now.Add(time.Minute)}
	first, err := b.s.Claim(b.ctx, p)
	if err != nil || first == nil {
		t.Fatalf("Claim = %+v, %v", first, err)
	}
	queued := b.enqueue(t, api.OperationSpec{})
	if _, err := b.s.RemoveWorker(b.ctx, "w", b.now); err != nil {
		t.Fatal(err)
	}
	for _, p := range []store.ClaimParams{p, {WorkerID: "w", Pools: []string{"p"}, LeaseID: "lease-2", Now: b.now, ExpiresAt: b.now.Add(time.Minute)},
		{WorkerID: "never-registered", Pools: []string{"p"}, LeaseID: "lease-3", Now: b.now, ExpiresAt: b.now.Add(time.Minute)}} {
		if l, err := b.s.Claim(b.ctx, p); err != nil || l != nil {
			t.Errorf("Claim for %s (request %q) = %+v, %v; want nothing", p.WorkerID, p.RequestID, l, err)
		}
	}
	l, err := b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: "op-handed", Spec: api.OperationSpec{Pool: "p", Script: "x"}, CreatedAt: b.now},
		store.ClaimParams{WorkerID: "w", LeaseID: "lease-4", Now: b.now, ExpiresAt: b.now.Add(time.Minute)})
	if err != nil || l != nil {
		t.Errorf("CreateLeasedOperation to a removed worker = %+v, %v; want nil and nothing stored", l, err)
	}
	_, err = b.s.Operation(b.ctx, "op-handed")
	wantErr(t, err, store.ErrNotFound)
	if op := b.get(t, queued.ID); op.State != api.StateQueued {
		t.Errorf("the queued operation became %s", op.State)
	}
}
