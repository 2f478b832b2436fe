package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
)

// The SQLite driver needs none of these: its single writer orders every change. Here each Store stands for
// one dispatch server with its own connections, all on one database.

var now = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// servers opens n stores on one fresh database, and creates pool p and, for each id in workers, a healthy
// worker of pool p with room for capacity operations.
func servers(t *testing.T, n, capacity int, workers ...string) []*Store {
	t.Helper()
	url := pgtest.URL(t)
	var out []*Store
	for range n {
		s, err := Open(t.Context(), url, WithLogger(quietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		out = append(out, s)
	}
	ctx := t.Context()
	if err := out[0].CreatePool(ctx, api.Pool{Name: "p", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, w := range workers {
		if err := out[0].CreateWorker(ctx, store.Worker{Worker: api.Worker{ID: w, Name: w, Pools: []string{"p"}, Version: "1",
			Capacity: capacity, Healthy: true, RegisteredAt: now, LastHeartbeat: now}, TokenHash: []byte("hash-" + w), TokenID: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func enqueue(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.CreateOperation(t.Context(), store.NewOperation{ID: fmt.Sprintf("op-%05d", i),
			Spec: api.OperationSpec{Pool: "p", Script: "true"}, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
}

// claimAll has each worker claim, on its own server (workers[i] on stores[i]), until nothing is left, all at
// once, and returns who got each operation; a second lease of one operation is an error.
func claimAll(t *testing.T, stores []*Store, workers []string) map[string]string {
	t.Helper()
	var mu sync.Mutex
	leased := map[string]string{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, w := range workers {
		wg.Go(func() {
			<-start
			for n := 0; ; n++ {
				l, err := stores[i].Claim(context.Background(), store.ClaimParams{WorkerID: w, Pools: []string{"p"},
					LeaseID: fmt.Sprintf("%s-%d", w, n), Now: now, ExpiresAt: now.Add(time.Minute)})
				if err != nil {
					t.Errorf("Claim for %s: %v", w, err)
					return
				}
				if l == nil {
					return
				}
				mu.Lock()
				if prev, dup := leased[l.Operation.ID]; dup {
					t.Errorf("operation %s leased twice: to %s and to %s", l.Operation.ID, prev, w)
				}
				leased[l.Operation.ID] = w
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return leased
}

// TestClaimOnceAcrossServers: 8 workers, each on its own server, claim 2,000 operations at once: every
// operation is leased exactly once, and the work is spread (SKIP LOCKED lets claims pass each other).
func TestClaimOnceAcrossServers(t *testing.T) {
	t.Parallel()
	workers := []string{"w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"}
	stores := servers(t, len(workers), 10000, workers...)
	const ops = 2000
	enqueue(t, stores[0], ops)
	leased := claimAll(t, stores, workers)
	if len(leased) != ops {
		t.Errorf("%d operations leased, want %d", len(leased), ops)
	}
	var n int
	if err := stores[0].pool.QueryRow(t.Context(), `SELECT count(*) FROM operations WHERE state = 'leased'`).Scan(&n); err != nil || n != ops {
		t.Errorf("%d operations stored leased (%v), want %d", n, err, ops)
	}
	per := map[string]int{}
	for _, w := range leased {
		per[w]++
	}
	t.Logf("leases per worker: %v", per)
}

// TestCapacityAcrossServers: one worker with room for 3 operations long-polls through 8 servers at once (a
// worker's retries can land on different servers): it gets 3 leases, not one per server.
func TestCapacityAcrossServers(t *testing.T) {
	t.Parallel()
	const servers_, capacity = 8, 3
	stores := servers(t, servers_, capacity, "w")
	enqueue(t, stores[0], 20)
	for round := range 5 {
		if _, err := stores[0].pool.Exec(t.Context(), `UPDATE operations SET state = 'queued', worker_id = NULL,
			lease_id = NULL, lease_expires_at = NULL, leased_at = NULL`); err != nil {
			t.Fatal(err)
		}
		workers := make([]string, servers_)
		for i := range workers {
			workers[i] = "w"
		}
		if leased := claimAll(t, stores, workers); len(leased) != capacity {
			t.Fatalf("round %d: %d operations leased to a worker with room for %d", round, len(leased), capacity)
		}
	}
}

// TestHandOffCapacityAcrossServers: submits on 8 servers hand operations to one worker with room for 3, all
// at once, mixed with claims: it holds 3 leases, not one per server. The hand-off locks the worker's row in
// its batch's first statement and counts in the next; counting in the statement that locks would let every
// server see the others' leases as not yet there.
func TestHandOffCapacityAcrossServers(t *testing.T) {
	t.Parallel()
	const servers_, capacity = 8, 3
	stores := servers(t, servers_, capacity, "w")
	enqueue(t, stores[0], servers_)
	for round := range 5 {
		if _, err := stores[0].pool.Exec(t.Context(), `DELETE FROM operations WHERE id LIKE 'handed-%'`); err != nil {
			t.Fatal(err)
		}
		if _, err := stores[0].pool.Exec(t.Context(), `UPDATE operations SET state = 'queued', worker_id = NULL,
			lease_id = NULL, lease_expires_at = NULL, leased_at = NULL`); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var leased []string
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, s := range stores {
			wg.Go(func() {
				<-start
				p := store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: fmt.Sprintf("lease-%d", i), Now: now,
					ExpiresAt: now.Add(time.Minute)}
				var l *api.Lease
				var err error
				if i%2 == 0 {
					l, err = s.CreateLeasedOperation(context.Background(), store.NewOperation{ID: fmt.Sprintf("handed-%d-%d", round, i),
						Spec: api.OperationSpec{Pool: "p", Script: "true"}, CreatedAt: now}, p)
				} else {
					l, err = s.Claim(context.Background(), p)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if l != nil {
					mu.Lock()
					leased = append(leased, l.Operation.ID)
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		if len(leased) != capacity {
			t.Fatalf("round %d: %d operations leased to a worker with room for %d: %v", round, len(leased), capacity, leased)
		}
	}
}

// TestRenewalRacesExpiry: a heartbeat renewing a lease and an expiry sweep on another server, at once, on
// many leases: each lease ends one way only. Either the renewal committed first (the lease lives, renewed,
// and the heartbeat is not told to cancel it) or the expiry did (the operation is lost, and the heartbeat,
// which could not renew it, tells the worker to stop it).
func TestRenewalRacesExpiry(t *testing.T) {
	t.Parallel()
	stores := servers(t, 2, 10000, "w")
	const ops = 300
	enqueue(t, stores[0], ops)
	ctx := t.Context()
	// Batch k of 10 leases expires at minute k+1, so each sweep below reaches its own batch only; a renewal
	// moves a lease past them all.
	expiry := func(i int) time.Time { return now.Add(time.Duration(i/10+1) * time.Minute) }
	var ids []string
	for i := range ops {
		l, err := stores[0].Claim(ctx, store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: fmt.Sprint("l", i),
			Now: now, ExpiresAt: expiry(i)})
		if err != nil || l == nil {
			t.Fatalf("Claim: %v, %v", l, err)
		}
		ids = append(ids, l.Operation.ID)
	}
	lost, kept := 0, 0
	for i := 0; i < ops; i += 10 {
		batch, expires := ids[i:i+10], expiry(i)
		var reply store.HeartbeatReply
		var hbErr, expErr error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			// Sent just before the expiry (so the lease is live for it), received as the sweep runs.
			reply, hbErr = stores[0].Heartbeat(ctx, store.Heartbeat{WorkerID: "w", HeartbeatRequest: api.HeartbeatRequest{
				Version: "1", Capacity: 10000, Running: batch, Health: api.Health{OK: true}},
				Now: expires, LeaseExpiresAt: expires.Add(time.Hour)})
		})
		wg.Go(func() {
			<-start
			_, expErr = stores[1].ExpireLeases(ctx, expires.Add(time.Second))
		})
		close(start)
		wg.Wait()
		if hbErr != nil || expErr != nil {
			t.Fatalf("Heartbeat: %v; ExpireLeases: %v", hbErr, expErr)
		}
		cancel := map[string]bool{}
		for _, id := range reply.Cancel {
			cancel[id] = true
		}
		for _, id := range batch {
			op, err := stores[0].OperationSummary(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case op.State == api.StateLost && cancel[id]:
				lost++
			case op.State == api.StateLeased && !cancel[id]:
				kept++
			default:
				t.Errorf("operation %s: state %s, heartbeat told to cancel it: %v; want lost and cancel, or leased and not",
					id, op.State, cancel[id])
			}
		}
	}
	t.Logf("%d leases renewed first, %d expired first", kept, lost)
}

// TestDeploymentEndsRaceAcrossServers: on three servers at once, one finishes a deployment's first step, one
// cancels the deployment, one claims (its next step, if it became claimable): none of them fails (the steps
// are locked in step order everywhere, so the three cannot deadlock), and each deployment ends cancelled
// with one of the outcomes the order of the three allows.
func TestDeploymentEndsRaceAcrossServers(t *testing.T) {
	t.Parallel()
	stores := servers(t, 3, 10000, "w")
	ctx := t.Context()
	exit := 0
	for i := range 40 {
		d := store.NewDeployment{ID: fmt.Sprint("dep-", i), Name: "release", CreatedAt: now}
		for step := range 3 {
			d.Steps = append(d.Steps, store.NewOperation{ID: fmt.Sprintf("dep-%d-%d", i, step),
				Spec: api.OperationSpec{Pool: "p", Script: "true"}, CreatedAt: now})
		}
		if _, err := stores[0].CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
		claim := store.ClaimParams{WorkerID: "w", Pools: []string{"p"}, LeaseID: fmt.Sprint("l-", i), Now: now, ExpiresAt: now.Add(time.Hour)}
		l, err := stores[0].Claim(ctx, claim)
		if err != nil || l == nil || l.Operation.ID != d.Steps[0].ID {
			t.Fatalf("Claim = %v, %v; want the first step", l, err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 3)
		wg.Go(func() {
			<-start
			_, _, errs[0] = stores[0].Finish(ctx, store.LeaseRef{OperationID: l.Operation.ID, LeaseID: l.LeaseID, WorkerID: "w", Now: now},
				store.Result{State: api.StateSucceeded, ExitCode: &exit})
		})
		wg.Go(func() {
			<-start
			_, _, errs[1] = stores[1].CancelDeployment(ctx, d.ID, now)
		})
		wg.Go(func() {
			<-start
			claim.LeaseID += "-next"
			_, errs[2] = stores[2].Claim(ctx, claim)
		})
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil && !errors.Is(err, store.ErrFinished) {
				t.Fatalf("deployment %d: %v", i, err)
			}
		}
		got, err := stores[0].Deployment(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		var states []api.State
		for _, op := range got.Operations {
			states = append(states, op.State)
		}
		ok := slices.Equal(states, []api.State{api.StateSucceeded, api.StateCancelled, api.StateCancelled}) ||
			slices.Equal(states, []api.State{api.StateSucceeded, api.StateLeased, api.StateCancelled})
		if !ok || (states[1] == api.StateCancelled && got.State != api.StateCancelled) {
			t.Errorf("deployment %d: %s with steps %v; want cancelled with [succeeded cancelled cancelled], or "+
				"step 2 leased (claimed before the cancel) and step 3 cancelled", i, got.State, states)
		}
	}
}

// TestTxRetriesDeadlockVictim: two transactions lock two workers' rows in opposite orders, each waiting until
// the other holds its first lock: a real deadlock, which PostgreSQL breaks by aborting one of them. tx runs
// the victim again, and both succeed.
func TestTxRetriesDeadlockVictim(t *testing.T) {
	t.Parallel()
	s := servers(t, 1, 1, "a", "b")[0]
	var firstLocks sync.WaitGroup
	firstLocks.Add(2)
	var attempts [2]atomic.Int32
	lock := func(tx pgx.Tx, id string) error {
		_, err := tx.Exec(t.Context(), `SELECT 1 FROM workers WHERE id = $1 FOR UPDATE`, id)
		return err
	}
	run := func(i int, first, second string) error {
		return s.tx(t.Context(), func(tx pgx.Tx) error {
			n := attempts[i].Add(1)
			if err := lock(tx, first); err != nil {
				return err
			}
			if n == 1 {
				firstLocks.Done()
				firstLocks.Wait()
			}
			return lock(tx, second)
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- run(0, "a", "b") }()
	go func() { errs <- run(1, "b", "a") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a transaction failed: %v", err)
		}
	}
	if n := attempts[0].Load() + attempts[1].Load(); n != 3 {
		t.Errorf("%d attempts in all; want 3 (the deadlock's victim ran again)", n)
	}
}
