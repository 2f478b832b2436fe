package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
)

// Several dispatch servers on one PostgreSQL database, on loopback ports, as a real deployment runs them
// behind a load balancer (a Kubernetes Service).

// testPG is the private PostgreSQL of this test process (unless $OCTO_TEST_POSTGRES names one): started on
// first use, stopped by TestMain after the tests (stopPG), so no process or goroutine outlives them.
var testPG struct {
	sync.Mutex
	srv *pgtest.Server
	dir string
	err error
	n   int
}

// pgURL returns the URL of a fresh, empty database.
func pgURL(tb testing.TB) string {
	tb.Helper()
	if os.Getenv("OCTO_TEST_POSTGRES") != "" {
		return pgtest.URL(tb)
	}
	testPG.Lock()
	defer testPG.Unlock()
	if testPG.srv == nil && testPG.err == nil {
		testPG.dir, testPG.err = os.MkdirTemp("", "octo-server-pg-")
		if testPG.err == nil {
			testPG.srv, testPG.err = pgtest.Start(testPG.dir)
		}
	}
	if errors.Is(testPG.err, pgtest.ErrNoBinaries) && os.Getenv("CI") == "" {
		tb.Skipf("skipping: %v", testPG.err)
	}
	if testPG.err != nil {
		tb.Fatalf("starting the test PostgreSQL: %v", testPG.err)
	}
	testPG.n++
	url, err := testPG.srv.CreateDatabase(context.Background(), fmt.Sprintf("replicas_%d", testPG.n))
	if err != nil {
		tb.Fatal(err)
	}
	return url
}

// stopPG runs the tests, then stops the PostgreSQL pgURL started.
type stopPG struct{ m *testing.M }

func (s stopPG) Run() int {
	code := s.m.Run()
	testPG.Lock()
	defer testPG.Unlock()
	if testPG.srv != nil {
		if err := errors.Join(testPG.srv.Stop(), os.RemoveAll(testPG.dir)); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test PostgreSQL:", err)
			code = max(code, 1)
		}
	}
	return code
}

// replica starts a dispatch server over the PostgreSQL database at url, stopped when the test ends. kill
// stops it the hard way, as a crash looks to its clients: its connections break at once.
func replica(tb testing.TB, url string, cfg Config) (b *bundle, kill func()) {
	tb.Helper()
	st, err := postgres.Open(tb.Context(), url, postgres.WithLogger(logrusDiscard()))
	if err != nil {
		tb.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln := &killable{Listener: inner, conns: map[net.Conn]struct{}{}}
	var killed atomic.Bool
	b = serveOn(tb, cfg, nil, st, ln, &killed)
	return b, func() {
		killed.Store(true)
		ln.kill()
		_ = b.stop() // Serve fails: its listener is gone
	}
}

// killable is a listener whose connections can all be broken at once.
type killable struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	dead  bool
}

func (k *killable) Accept() (net.Conn, error) {
	c, err := k.Listener.Accept()
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		c.Close()
		return nil, net.ErrClosed
	}
	k.conns[c] = struct{}{}
	return c, nil
}

func (k *killable) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dead = true
	k.Listener.Close()
	for c := range k.conns {
		c.Close()
	}
}

// balancer is a TCP load balancer in front of the servers, as a Kubernetes Service or a cloud load balancer
// is: each new connection goes to the next server (round robin) that accepts it. When a server dies its
// connections break, and the clients' retries connect again, to a live one.
type balancer struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func newBalancer(tb testing.TB, backends ...string) *balancer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	lb := &balancer{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	lb.wg.Go(lb.serve)
	tb.Cleanup(func() {
		ln.Close()
		lb.mu.Lock()
		for c := range lb.conns {
			c.Close()
		}
		lb.mu.Unlock()
		lb.wg.Wait()
	})
	return lb
}

func (lb *balancer) url() string { return "http://" + lb.ln.Addr().String() }

func (lb *balancer) serve() {
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return
		}
		lb.wg.Go(func() { lb.proxy(c) })
	}
}

// proxy joins client connection c to the first backend that accepts, from the next in turn.
func (lb *balancer) proxy(c net.Conn) {
	defer c.Close()
	start := lb.next.Add(1)
	var up net.Conn
	for i := range uint64(len(lb.backends)) {
		addr := lb.backends[(start+i)%uint64(len(lb.backends))]
		var err error
		if up, err = net.Dial("tcp", addr); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	if !lb.track(c, up) {
		return
	}
	defer lb.untrack(c, up)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

func (lb *balancer) track(cs ...net.Conn) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.conns == nil {
		return false
	}
	for _, c := range cs {
		lb.conns[c] = struct{}{}
	}
	return true
}

func (lb *balancer) untrack(cs ...net.Conn) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, c := range cs {
		delete(lb.conns, c)
	}
}

// ownConnections returns an HTTP client with connections of its own, as each worker process has.
func ownConnections(tb testing.TB) *http.Client {
	tr := &http.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// await waits for a value on c, failing the test if none comes in a minute (a guard against a hang, far
// beyond what any wait here takes).
func await[T any](tb testing.TB, what string, c <-chan T) T {
	tb.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(time.Minute):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// TestReplicasSubmitWakesOtherServer: an operation submitted on server A reaches a worker long-polling on
// server B through the signal between them, not the slow re-check (an hour here), within the poll.
func TestReplicasSubmitWakesOtherServer(t *testing.T) {
	t.Parallel()
	url := pgURL(t)
	a, _ := replica(t, url, testConfig())
	b, _ := replica(t, url, testConfig())
	a.pool("p")
	token, _ := a.register("w", []string{"p"})
	w := b.client(token)
	type result struct {
		l   *api.Lease
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := w.Lease(t.Context(), 30*time.Second)
		got <- result{l, err}
	}()
	b.waitAsleep("the worker to wait on B", func(n int) bool { return n == 1 })
	op := a.submit(api.OperationSpec{Pool: "p"})
	r := await(t, "the lease", got)
	if r.err != nil || r.l == nil || r.l.Operation.ID != op.ID {
		t.Fatalf("the long-poll on B got %+v, %v; want %s, submitted on A (without the signal it waits out its 30 s)", r.l, r.err, op.ID)
	}
}

// TestReplicasFollowLogs: a log follower on server B sees the lines appended through server A as they come
// (each line only after the previous one reached it: the signal wakes it, not the hour's re-check), then
// the end.
func TestReplicasFollowLogs(t *testing.T) {
	t.Parallel()
	url := pgURL(t)
	a, _ := replica(t, url, testConfig())
	b, _ := replica(t, url, testConfig())
	a.pool("p")
	w, _ := a.worker("w", []string{"p"})
	op := a.submit(api.OperationSpec{Pool: "p"})
	l := a.lease(w)
	seen := make(chan string, 10)
	ended := make(chan *api.LogEnd, 1)
	go func() {
		end, err := b.admin.Logs(t.Context(), op.ID, client.LogsOptions{Follow: true}, func(l api.LogLine) error {
			seen <- l.Text
			return nil
		})
		if err != nil {
			t.Errorf("following on B: %v", err)
		}
		ended <- end
	}()
	for i := int64(1); i <= 3; i++ {
		text := fmt.Sprintf("line %d", i)
		if _, err := w.AppendLogs(t.Context(), op.ID, l.LeaseID, []api.LogLine{line(i, text)}); err != nil {
			t.Fatal(err)
		}
		if got := await(t, text+" on B", seen); got != text {
			t.Fatalf("the follower on B got %q, want %q", got, text)
		}
	}
	if _, err := w.Result(t.Context(), op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 3}); err != nil {
		t.Fatal(err)
	}
	if end := await(t, "the end on B", ended); end == nil || end.State != api.StateSucceeded {
		t.Fatalf("the follower on B ended with %+v, want succeeded", end)
	}
}

// TestReplicasShareWorkAndSurviveOne: 8 workers reach two servers through a load balancer (4 long-poll on
// each), 2,000 operations are submitted on B while they run, and A is killed once 700 results are in. Its
// workers' broken calls are retried through the balancer on B; every operation is leased exactly once and
// its result stored, and at the end all 8 workers wait on B.
//
// Not parallel: its load (two servers, 8 workers, 2,000 operations) would slow the package's parallel tests
// past their waits.
func TestReplicasShareWorkAndSurviveOne(t *testing.T) {
	const workers, ops, killAt = 8, 2000, 700
	url := pgURL(t)
	cfg := benchConfig() // workers that never heartbeat stay eligible however long the run takes
	a, killA := replica(t, url, cfg)
	b, _ := replica(t, url, cfg)
	lb := newBalancer(t, a.url[len("http://"):], b.url[len("http://"):])
	b.pool("p")
	ctx, stopWorkers := context.WithCancel(t.Context())
	defer stopWorkers()

	var mu sync.Mutex
	leasedBy := map[string]string{} // operation -> the worker and lease that got it
	var dup []string
	var results atomic.Int64
	killNow := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		token, _ := b.register(fmt.Sprintf("w%d", i), []string{"p"})
		c, err := client.New(client.Config{Server: lb.url(), Token: token, RetryMax: 20,
			RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 100 * time.Millisecond,
			HTTPClient: ownConnections(t)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for {
				l, err := c.Lease(ctx, 20*time.Second)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d: lease: %w", i, err)
					return
				}
				if l == nil {
					continue
				}
				mu.Lock()
				if prev, ok := leasedBy[l.Operation.ID]; ok {
					dup = append(dup, fmt.Sprintf("%s to %s and to w%d/%s", l.Operation.ID, prev, i, l.LeaseID))
				}
				leasedBy[l.Operation.ID] = fmt.Sprintf("w%d/%s", i, l.LeaseID)
				mu.Unlock()
				if _, err := c.Result(ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("worker %d: result of %s: %w", i, l.Operation.ID, err)
					}
					return
				}
				if results.Add(1) == killAt {
					close(killNow)
				}
			}
		})
	}
	stop := func() {
		stopWorkers()
		wg.Wait()
	}
	defer stop()
	a.waitAsleep("4 workers to wait on A", func(n int) bool { return n == workers/2 })
	b.waitAsleep("4 workers to wait on B", func(n int) bool { return n == workers/2 })

	ids := make([]string, 0, ops)
	for range ops {
		ids = append(ids, b.submit(api.OperationSpec{Pool: "p"}).ID)
	}
	select {
	case <-killNow:
	case err := <-errs:
		t.Fatal(err)
	}
	killA()
	b.waitAsleep("all 8 workers to wait on B once every operation is done", func(n int) bool { return n == workers })
	stop()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, d := range dup {
		t.Errorf("leased twice: %s", d)
	}
	if n := results.Load(); n != ops {
		t.Errorf("%d results stored, want %d", n, ops)
	}
	for _, id := range ids {
		if op := b.op(id); op.State != api.StateSucceeded {
			t.Errorf("operation %s is %s, want succeeded", id, op.State)
		}
	}
}

// pollOn starts a 30 s lease long-poll of w and waits until it sleeps on server b; the result arrives on the
// returned channel.
func pollOn(t *testing.T, b *bundle, w *client.Client) <-chan leaseResult {
	t.Helper()
	got := make(chan leaseResult, 1)
	go func() {
		l, err := w.Lease(t.Context(), 30*time.Second)
		got <- leaseResult{l, err}
	}()
	b.waitAsleep("the worker to wait on B", func(n int) bool { return n == 1 })
	return got
}

type leaseResult struct {
	l   *api.Lease
	err error
}

// TestReplicasWakeUps: what else a long-poll on server B waits for, done through server A, wakes it by the
// signal (the slow re-check is an hour, the poll 30 s).
func TestReplicasWakeUps(t *testing.T) {
	t.Parallel()
	url := pgURL(t)
	a, _ := replica(t, url, testConfig())
	b, _ := replica(t, url, testConfig())
	// Each case has a pool of its own, so what one leaves queued is not the next one's.
	t.Run("deployment's next step", func(t *testing.T) {
		a.pool("deploy")
		first, _ := a.worker("first", []string{"deploy"})
		d, err := a.admin.Deploy(t.Context(), api.DeploymentSpec{Name: "d", Pool: "deploy",
			Steps: []api.OperationSpec{{Script: "echo 1"}, {Script: "echo 2"}}})
		if err != nil {
			t.Fatal(err)
		}
		l := a.lease(first)
		token, _ := a.register("second", []string{"deploy"})
		got := pollOn(t, b, b.client(token))
		if _, err := first.Result(t.Context(), l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); err != nil {
			t.Fatal(err)
		}
		if r := await(t, "the lease", got); r.err != nil || r.l == nil || r.l.Operation.ID != d.Operations[1].ID {
			t.Fatalf("the long-poll on B got %+v, %v; want step 2, %s", r.l, r.err, d.Operations[1].ID)
		}
	})
	t.Run("slot freed", func(t *testing.T) {
		a.pool("slot")
		tok, err := a.admin.CreateToken(t.Context(), []string{"slot"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := a.client(tok.Token).Register(t.Context(), api.RegisterRequest{Name: "one-slot", Version: "1", Capacity: 1})
		if err != nil {
			t.Fatal(err)
		}
		onA, onB := a.client(reg.WorkerToken), b.client(reg.WorkerToken)
		a.submit(api.OperationSpec{Pool: "slot"})
		l := a.lease(onA)
		next := a.submit(api.OperationSpec{Pool: "slot"})
		got := pollOn(t, b, onB) // full: it waits
		if _, err := onA.Result(t.Context(), l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0)}); err != nil {
			t.Fatal(err)
		}
		if r := await(t, "the lease", got); r.err != nil || r.l == nil || r.l.Operation.ID != next.ID {
			t.Fatalf("the long-poll on B got %+v, %v; want %s once the slot freed on A", r.l, r.err, next.ID)
		}
	})
	t.Run("worker removed", func(t *testing.T) {
		a.pool("removed")
		token, id := a.register("removed", []string{"removed"})
		got := pollOn(t, b, b.client(token))
		if _, err := a.admin.RemoveWorker(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		r := await(t, "the end of the poll", got)
		var apiErr *client.Error
		if !errors.As(r.err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
			t.Fatalf("the long-poll on B of a worker removed on A ended with %+v, %v; want 401 at once", r.l, r.err)
		}
	})
}

// BenchmarkReplicaHandOff: the time from a submit call until a worker long-polling for it has the lease, on
// PostgreSQL: the worker waits on the server the submit goes to (a direct hand-off), or on another server
// (the signal travels by NOTIFY, then that server claims). Run: go test -run XXX -bench ReplicaHandOff
// ./dispatch/server/
func BenchmarkReplicaHandOff(b *testing.B) {
	url := pgURL(b)
	a, _ := replica(b, url, benchConfig())
	other, _ := replica(b, url, benchConfig())
	a.pool("p")
	for _, c := range []struct {
		name string
		on   *bundle
	}{{"same-server", a}, {"cross-server", other}} {
		b.Run(c.name, func(b *testing.B) {
			token, _ := a.register("w-"+c.name, []string{"p"})
			w := c.on.client(token)
			lat := make([]time.Duration, 0, b.N)
			for range b.N {
				got := make(chan time.Time, 1)
				leases := make(chan *api.Lease, 1)
				go func() {
					l, err := w.Lease(b.Context(), 30*time.Second)
					if err != nil {
						l = nil
					}
					got <- time.Now()
					leases <- l
				}()
				c.on.waitAsleep("the worker to wait", func(n int) bool { return n > 0 })
				start := time.Now()
				a.submit(api.OperationSpec{Pool: "p"})
				at, l := <-got, <-leases
				if l == nil {
					b.Fatal("the waiting worker got no lease")
				}
				lat = append(lat, at.Sub(start))
				finishBench(b, a, w, l)
			}
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-us")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-us")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestReplicasSweepOneAtATime: while another server holds a sweep's lock, this server's lease expiry and
// retention skip their run, and run once it is free.
func TestReplicasSweepOneAtATime(t *testing.T) {
	t.Parallel()
	url := pgURL(t)
	a, _ := replica(t, url, testConfig())
	other, err := postgres.Open(t.Context(), url, postgres.WithLogger(logrusDiscard()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	a.pool("p")
	w, _ := a.worker("w", []string{"p"})
	op := a.submit(api.OperationSpec{Pool: "p"})
	a.lease(w)
	later := time.Now().Add(time.Hour) // the lease has expired by then
	retention := NewRetention(other, time.Minute, logrusDiscard())
	if _, err := other.Exclusively(t.Context(), sweepExpiry, func(ctx context.Context) error {
		if a.srv.expire(ctx, later) {
			t.Error("lease expiry ran while another server held its lock")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := a.op(op.ID).State; got != api.StateLeased {
		t.Fatalf("operation %s, want still leased", got)
	}
	if !a.srv.expire(t.Context(), later) {
		t.Error("lease expiry did not run with its lock free")
	}
	if got := a.op(op.ID).State; got != api.StateLost {
		t.Fatalf("operation %s, want lost once its lease expired", got)
	}
	afterRetention := later.Add(2 * time.Minute) // the operation ended (lost) at later
	if _, err := other.Exclusively(t.Context(), sweepRetention, func(ctx context.Context) error {
		if retention.run(ctx, afterRetention) {
			t.Error("the retention ran while another server held its lock")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := a.op(op.ID).State; got != api.StateLost {
		t.Fatalf("operation %s, want still there", got)
	}
	if !retention.run(t.Context(), afterRetention) {
		t.Error("the retention did not run with its lock free")
	}
	if _, err := a.admin.Operation(t.Context(), op.ID); !client.IsNotFound(err) {
		t.Errorf("after the retention, reading the operation = %v; want 404", err)
	}
}
