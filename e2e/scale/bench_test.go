// Package scale measures one dispatch server process, the real `octo-worker server` binary, under 10,000
// workers long-polling it: its resident memory and CPU while they wait, and the submit→lease hand-off latency
// with them waiting, on SQLite and on PostgreSQL. The workers are goroutines of the benchmark process, each
// registered and heartbeating as the agent does, on keep-alive connections over loopback. Run it with
// scripts/bench-scale.sh (it needs $OCTO_BINARY). Goal: under 1 GiB RSS and a p99 hand-off under 10 ms.
package scale

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
	"github.com/octo-worker/octo-worker/e2e/proc"

	_ "github.com/jackc/pgx/v5/stdlib" // the raw probe goes through database/sql on both engines
	_ "modernc.org/sqlite"
)

const adminToken = "scale-bench-admin-token-0123456789"

// settings, from the environment: OCTO_SCALE_WORKERS (10000), OCTO_SCALE_WAIT (how long the workers wait
// while the server's memory and CPU are sampled, 60s), OCTO_SCALE_SAMPLES (hand-offs timed, 500);
// OCTO_SCALE_HEARTBEAT sets the server's --heartbeat-interval (default: the server's own, 5s);
// OCTO_SCALE_PG_PARAMS adds URL parameters to PostgreSQL's --db (e.g. pool_max_conns=32);
// OCTO_SCALE_FLEET_PRIORITY is the CPU priority of the benchmark process once the server and its database
// run (fleetPriority).
func settings(b *testing.B) (workers int, wait time.Duration, samples int) {
	workers, samples, wait = 10000, 500, time.Minute
	var err error
	if v := os.Getenv("OCTO_SCALE_WORKERS"); v != "" {
		if workers, err = strconv.Atoi(v); err != nil || workers < 1 {
			b.Fatalf("OCTO_SCALE_WORKERS=%q: want a positive number of workers", v)
		}
	}
	if v := os.Getenv("OCTO_SCALE_SAMPLES"); v != "" {
		if samples, err = strconv.Atoi(v); err != nil || samples < 1 {
			b.Fatalf("OCTO_SCALE_SAMPLES=%q: want a positive number of hand-offs", v)
		}
	}
	if v := os.Getenv("OCTO_SCALE_WAIT"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < time.Second {
			b.Fatalf("OCTO_SCALE_WAIT=%q: want a duration of at least 1s", v)
		}
	}
	return workers, wait, samples
}

// BenchmarkTenThousandWorkers, once per driver (-benchtime 1x: each iteration is the whole run):
//   - idle-rss-MiB: the server's RSS after start; baseline-p50-us/baseline-p99-us: submit → lease with one
//     worker waiting (the same server, before the others register): the baselines of the same run.
//   - Then every worker registers, heartbeats at the interval the server gives (as the agent does: it takes the
//     server's when shorter than its own) and long-polls (its first poll waits a random 1-30 s, so that the
//     polls end spread over the wait as a real fleet's do, not in waves); once every poll is sent, the server's
//     VmRSS is sampled every second for OCTO_SCALE_WAIT: rss-MiB (the largest sample), hwm-MiB (VmHWM at the
//     end), KiB/worker (over the idle RSS), cpu-cores (utime+stime over the wait), cpu-us/req (per request
//     served: heartbeats and long-polls ended by their deadline), req/s served against due-req/s (what the
//     fleet sends when every request is answered at once: fewer served means the server, or the machine, falls
//     behind), the database server's CPU for PostgreSQL, the benchmark process's own CPU, and runq-wait-s/s:
//     how long the server's threads waited for a CPU per second (on a shared machine, what the others took).
//   - p50-us/p99-us: submit → lease with them all waiting, and p99-ratio against the baseline;
//     submit-p50-us/submit-p99-us: submit → its answer, which the server sends once it handed the lease to a
//     waiting poll: what the lease takes longer is the poll's answer on its way (written by the server, read
//     by this process, whose 20,000 goroutines may be late themselves); late-handoffs: not leased in a minute.
//   - raw-db-, healthz- and refused-p50-us/p99-us, with their baseline-…-p99-us: the floor under a hand-off
//     on the same machine at the same moments (rawProbe, timed beside each hand-off): a one-INSERT
//     transaction on the same engine, a request through the server that reads its store once, and one the
//     server refuses before any work. A hand-off is more than each of them; when they pass 10 ms, what the
//     machine leaves the processes misses the goal, whatever the hand-off's own work.
//
// The agents of a real fleet each hold two connections on plain HTTP (the long-poll and the heartbeat's);
// here the heartbeats share a pool of at most 256 connections, because the machine's file descriptor hard
// limit (20,000, not raisable in this container) cannot hold 2 × 10,000 on each side. Over HTTPS, HTTP/2 puts
// both on one connection, as here.
func BenchmarkTenThousandWorkers(b *testing.B) {
	exe := os.Getenv("OCTO_BINARY")
	if exe == "" {
		b.Fatal("OCTO_BINARY is not set: build with `make build` and set it to bin/octo-worker (scripts/bench-scale.sh does)")
	}
	workers, wait, samples := settings(b)
	raiseFileLimit(b, workers)
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run("db="+db, func(b *testing.B) {
			for range b.N {
				run(b, exe, db, workers, wait, samples)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// fleetPriority is OCTO_SCALE_FLEET_PRIORITY: "normal" (the default), "nice" (nice 19) or "idle"
// (SCHED_IDLE). The simulated workers stand for agents on other machines, but here they share two cores with
// the server and its database. At a lower priority (the benchmark process's, set once the server and the
// database run: their processes keep the usual one) they take the CPU those leave rather than an equal share
// of it. The submitter and the worker that receives a lease are goroutines of the same process, so what the
// lower priority costs them counts in the hand-off's latency.
func fleetPriority(b *testing.B) string {
	switch v := os.Getenv("OCTO_SCALE_FLEET_PRIORITY"); v {
	case "", "normal":
		return "normal"
	case "nice", "idle":
		return v
	default:
		b.Fatalf("OCTO_SCALE_FLEET_PRIORITY=%q: want normal, nice or idle", v)
		return ""
	}
}

// setPriority sets the scheduling of every thread of process pid to priority (fleetPriority; needs root to
// return to normal): Linux keeps it per thread, and a thread started later takes its creator's.
func setPriority(b *testing.B, pid int, priority string) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("listing the threads of %d: %v", pid, err)
	}
	policy, nice := 0, 0 // SCHED_OTHER
	switch priority {
	case "nice":
		nice = 19
	case "idle":
		policy = 5 // SCHED_IDLE
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(filepath.Base(t))
		if err != nil {
			continue
		}
		var param struct{ priority int32 }
		if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), uintptr(policy), uintptr(unsafe.Pointer(&param))); e != 0 && e != syscall.ESRCH {
			b.Fatalf("setting the scheduling policy of thread %d to %d: %v", tid, policy, e)
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
			b.Fatalf("setting the nice value of thread %d to %d: %v (lowering it needs root)", tid, nice, err)
		}
	}
}

// raiseFileLimit sets the soft limit of open files to the hard one (the server inherits it) and checks that
// it holds a connection per worker and the heartbeats' pool.
func raiseFileLimit(b *testing.B, workers int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if need := uint64(workers + heartbeatConns + 1000); lim.Cur < need {
		b.Fatalf("the open files limit is %d; %d workers need about %d: raise it (ulimit -n) or set OCTO_SCALE_WORKERS lower", lim.Cur, workers, need)
	}
}

// heartbeatConns bounds the connections the heartbeats share.
const heartbeatConns = 256

// fleet is the simulated workers of one run.
type fleet struct {
	b        *testing.B
	url      string
	hb       *http.Client // shared by the heartbeats
	waiting  atomic.Int64 // long-polls written to the server and not answered yet
	requests atomic.Int64 // heartbeats and long-polls ended empty
	errs     atomic.Int64
	late     atomic.Int64  // hand-offs not leased within a minute (not timed)
	every    time.Duration // the heartbeat interval the server gave
	got      sync.Map      // operation id -> chan time.Time (gotChan): when its lease reached the worker
}

func run(b *testing.B, exe, db string, workers int, wait time.Duration, samples int) {
	dir := b.TempDir()
	dbArg, probe, dbPids := database(b, db, dir)
	addr := fmt.Sprintf("127.0.0.1:%d", proc.FreePort(b))
	args := []string{"server", "--listen", addr, "--db", dbArg, "--admin-token", adminToken, "--retention", "0",
		"--packages-dir", filepath.Join(dir, "packages")}
	if hb := os.Getenv("OCTO_SCALE_HEARTBEAT"); hb != "" {
		args = append(args, "--heartbeat-interval", hb)
	}
	srv := proc.Start(b, exe, "server-"+db, []string{"OCTO_LOG_LEVEL=warn"}, args...)
	url := "http://" + addr
	srv.WaitHTTP(b, url+"/healthz", time.Minute)
	if prio := fleetPriority(b); prio != "normal" {
		setPriority(b, os.Getpid(), prio)
		defer setPriority(b, os.Getpid(), "normal") // the next run's server and database start at the usual one
		b.Logf("db=%s: the benchmark process (the fleet, the submitter, the probes) runs at %s priority", db, prio)
	}
	ctx, cancel := context.WithCancel(b.Context())
	var wg sync.WaitGroup
	defer func() { // after a b.Fatal too: the workers stop only when ctx ends
		cancel()
		wg.Wait()
	}()
	f := &fleet{b: b, url: url, hb: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: heartbeatConns,
		MaxConnsPerHost: heartbeatConns, IdleConnTimeout: time.Minute}}}
	admin := f.client(adminToken, nil)
	if _, err := admin.CreatePool(ctx, "p", ""); err != nil {
		b.Fatal(err)
	}
	tok, err := admin.CreateToken(ctx, []string{"p"}, 0)
	if err != nil {
		b.Fatal(err)
	}
	idle := status(b, srv.Pid())["VmRSS"]

	// The baseline: one worker waiting.
	if err := f.start(ctx, &wg, tok.Token, 0); err != nil {
		b.Fatal(err)
	}
	f.waitSent(1)
	base := f.handOffs(ctx, admin, probe, samples)

	// The fleet.
	regs := make(chan int)
	var rg sync.WaitGroup
	var regErr atomic.Pointer[error]
	for range 32 {
		rg.Go(func() {
			for i := range regs {
				if err := f.start(ctx, &wg, tok.Token, i); err != nil {
					regErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	started := time.Now()
	for i := 1; i < workers && regErr.Load() == nil; i++ {
		regs <- i
	}
	close(regs)
	rg.Wait()
	if err := regErr.Load(); err != nil {
		b.Fatal(*err)
	}
	f.waitSent(int64(workers))
	b.Logf("db=%s: %d workers registered and long-polling in %s", db, workers, time.Since(started).Round(time.Second))

	// Memory and CPU while they wait.
	cpu0, dbCPU0, req0, self0, t0 := cpuTicks(b, srv.Pid()), dbCPU(b, dbPids), f.requests.Load(), cpuTicks(b, os.Getpid()), time.Now()
	runq0 := runQueueWait(srv.Pid())
	var rss int64
	for end := t0.Add(wait); time.Now().Before(end); time.Sleep(time.Second) {
		rss = max(rss, status(b, srv.Pid())["VmRSS"])
	}
	elapsed := time.Since(t0).Seconds()
	cpu := float64(cpuTicks(b, srv.Pid())-cpu0) / clockTicks
	reqs := float64(f.requests.Load() - req0)
	self := float64(cpuTicks(b, os.Getpid())-self0) / clockTicks
	runq := (runQueueWait(srv.Pid()) - runq0).Seconds()
	st := status(b, srv.Pid())
	rss = max(rss, st["VmRSS"])

	lat := f.handOffs(ctx, admin, probe, samples)
	// A server that falls behind is a figure, not a failure: failed-req counts the worker requests that
	// failed (the first are logged), mostly heartbeats that waited longer than the client's 60 s timeout.
	b.ReportMetric(float64(f.errs.Load()), "failed-req")
	b.ReportMetric(float64(idle)/1024, "idle-rss-MiB")
	b.ReportMetric(float64(rss)/1024, "rss-MiB")
	b.ReportMetric(float64(st["VmHWM"])/1024, "hwm-MiB")
	b.ReportMetric(float64(rss-idle)/float64(workers), "KiB/worker")
	b.ReportMetric(cpu/elapsed, "cpu-cores")
	b.ReportMetric(cpu*1e6/reqs, "cpu-us/req")
	b.ReportMetric(reqs/elapsed, "req/s")
	b.ReportMetric(float64(workers)/f.every.Seconds()+float64(workers)/api.MaxLeaseWait.Seconds(), "due-req/s")
	b.ReportMetric(self/elapsed, "bench-cpu-cores")
	b.ReportMetric(runq/elapsed, "runq-wait-s/s")
	if dbPids != nil {
		b.ReportMetric(float64(dbCPU(b, dbPids)-dbCPU0)/clockTicks/elapsed, "db-cpu-cores")
	}
	b.ReportMetric(us(percentile(base.leased, 0.5)), "baseline-p50-us")
	b.ReportMetric(us(percentile(base.leased, 0.99)), "baseline-p99-us")
	b.ReportMetric(float64(len(lat.leased)), "handoffs")
	b.ReportMetric(float64(f.late.Load()), "late-handoffs")
	b.ReportMetric(us(percentile(lat.leased, 0.5)), "p50-us")
	b.ReportMetric(us(percentile(lat.leased, 0.99)), "p99-us")
	b.ReportMetric(float64(percentile(lat.leased, 0.99))/float64(percentile(base.leased, 0.99)), "p99-ratio")
	b.ReportMetric(us(percentile(lat.answered, 0.5)), "submit-p50-us")
	b.ReportMetric(us(percentile(lat.answered, 0.99)), "submit-p99-us")
	for _, p := range []struct {
		name      string
		base, lat []time.Duration
	}{{"raw-db", base.db, lat.db}, {"healthz", base.healthz, lat.healthz}, {"refused", base.refused, lat.refused}} {
		b.ReportMetric(us(percentile(p.base, 0.99)), "baseline-"+p.name+"-p99-us")
		b.ReportMetric(us(percentile(p.lat, 0.5)), p.name+"-p50-us")
		b.ReportMetric(us(percentile(p.lat, 0.99)), p.name+"-p99-us")
	}
	cancel()
	wg.Wait()
	if err := srv.Stop(syscall.SIGTERM, time.Minute); err != nil {
		b.Errorf("the server did not stop cleanly: %v\n%s", err, srv.Tail(20))
	}
}

// database returns the --db argument for driver db (a SQLite file in dir, or a database on a private
// PostgreSQL server started in dir and stopped when b ends), the raw probe of the same engine (rawProbe), and,
// for PostgreSQL, what finds its processes.
func database(b *testing.B, db, dir string) (string, *rawProbe, func() []int) {
	if db == "sqlite" {
		return filepath.Join(dir, "dispatch.db"), openProbe(b, "sqlite", "file:"+filepath.Join(dir, "probe.db")+
			"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)", "INTEGER PRIMARY KEY", "?"), nil
	}
	if _, err := pgtest.BinDir(); err != nil {
		pgtest.URL(b) // skips, or fails under $CI, saying how to install PostgreSQL
	}
	pgDir := filepath.Join(dir, "pg")
	if err := os.Mkdir(pgDir, 0o755); err != nil {
		b.Fatal(err)
	}
	pg, err := pgtest.Start(pgDir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := pg.Stop(); err != nil {
			b.Error(err)
		}
	})
	url, err := pg.CreateDatabase(b.Context(), "scale")
	if err != nil {
		b.Fatal(err)
	}
	probeURL, err := pg.CreateDatabase(b.Context(), "probe")
	if err != nil {
		b.Fatal(err)
	}
	if q := os.Getenv("OCTO_SCALE_PG_PARAMS"); q != "" { // e.g. pool_max_conns=32 (pgxpool's default: max(4, cores))
		url += "&" + q
	}
	return url, openProbe(b, "pgx", probeURL, "BIGSERIAL PRIMARY KEY", "$1"), func() []int { return postgresPids(pgDir) }
}

// rawProbe times what every hand-off costs at least, beside each hand-off, on the same machine at the same
// moment: the floor the hand-off's latency stands on.
//   - db: a transaction of one INSERT on the same engine, over one connection: SQLite, a file of its own
//     opened in this process in WAL mode with synchronous=NORMAL, as the server's; PostgreSQL, a database of
//     its own on the same server. A hand-off is one such transaction, and more.
//   - healthz: GET /healthz of the server, which answers after one read of its store: a request through the
//     server to its database and back. A hand-off is that, and the answer to a waiting poll.
//   - refused: GET /api/v1/version with no token, which the server refuses before it reads anything: a
//     request through this process, loopback and the server, and nothing else.
type rawProbe struct {
	insert *sql.Stmt
	hc     *http.Client
}

func openProbe(b *testing.B, driver, dsn, key, param string) *rawProbe {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(time.Hour)
	if _, err := db.Exec(`CREATE TABLE probe (id ` + key + `, v TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	ins, err := db.Prepare(`INSERT INTO probe (v) VALUES (` + param + `)`)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ins.Close() })
	return &rawProbe{insert: ins, hc: &http.Client{Timeout: time.Minute}}
}

// sample times one insert, one GET /healthz of the server at url and one request the server refuses at once.
func (p *rawProbe) sample(b *testing.B, url string) (db, healthz, refused time.Duration) {
	start := time.Now()
	if _, err := p.insert.Exec("a row of the probe"); err != nil {
		b.Fatal(err)
	}
	db = time.Since(start)
	return db, p.get(b, url+"/healthz", 200), p.get(b, url+"/api/v1/version", 401)
}

// get times a GET of url, which must answer status.
func (p *rawProbe) get(b *testing.B, url string, status int) time.Duration {
	start := time.Now()
	resp, err := p.hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		b.Fatalf("GET %s: %s, want %d", url, resp.Status, status)
	}
	return time.Since(start)
}

func (f *fleet) client(token string, hc *http.Client) *client.Client {
	c, err := client.New(client.Config{Server: f.url, Token: token, HTTPClient: hc, RetryWaitMin: 50 * time.Millisecond,
		RetryWaitMax: time.Second, UserAgent: "octo-worker-scale-bench"})
	if err != nil {
		f.b.Fatal(err)
	}
	return c
}

// start registers worker i and runs its heartbeats and long-polls until ctx ends. The registrations share the
// heartbeats' connections: a connection each would stay open beside the worker's long-poll, and 10,000 of
// them reach the open files limit (the registrations then fail, or hang).
func (f *fleet) start(ctx context.Context, wg *sync.WaitGroup, regToken string, i int) error {
	reg, err := f.client(regToken, f.hb).Register(ctx, api.RegisterRequest{Name: fmt.Sprintf("w%05d", i), Pools: []string{"p"},
		Version: "1.0.0", Capacity: 4, Capabilities: []string{"kubernetes-job"}})
	if err != nil {
		return fmt.Errorf("registering worker %d: %w", i, err)
	}
	if i == 0 { // the baseline worker, alone when it registers
		f.every = time.Duration(reg.HeartbeatSeconds) * time.Second
	}
	poller, beater := f.client(reg.WorkerToken, nil), f.client(reg.WorkerToken, f.hb)
	var mu sync.Mutex
	var running []string
	wg.Go(func() { // heartbeats, at a random phase so they spread as a fleet's do
		every := time.Duration(reg.HeartbeatSeconds) * time.Second
		t := time.NewTimer(rand.N(every))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			t.Reset(every)
			mu.Lock()
			req := api.HeartbeatRequest{Version: "1.0.0", Capacity: 4, Capabilities: []string{"kubernetes-job"},
				Running: slices.Clone(running), Health: api.Health{OK: true, CheckedAt: time.Now()}, Profiles: []string{}}
			mu.Unlock()
			if _, err := beater.Heartbeat(ctx, req); err != nil && ctx.Err() == nil {
				f.fail("heartbeat", err)
			}
			f.requests.Add(1)
		}
	})
	wg.Go(func() {
		// The first poll waits a random part of the longest wait: the fleet registers within seconds, and
		// polls begun together end together, every wait, each end followed by another poll's claim. A real
		// fleet's agents started at other times: their polls end spread over the wait, and so do these
		// after the first.
		wait := time.Duration(1+rand.N(int(api.MaxLeaseWait/time.Second))) * time.Second
		for ctx.Err() == nil {
			var wrote atomic.Bool
			trace := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
				if !wrote.Swap(true) {
					f.waiting.Add(1)
				}
			}})
			l, err := poller.Lease(trace, wait)
			wait = api.MaxLeaseWait
			if wrote.Load() {
				f.waiting.Add(-1)
			}
			if err != nil {
				if ctx.Err() == nil {
					f.fail("lease", err)
				}
				continue
			}
			if l == nil {
				f.requests.Add(1)
				continue
			}
			f.gotChan(l.Operation.ID) <- time.Now()
			mu.Lock()
			running = append(running, l.Operation.ID)
			mu.Unlock()
			zero := 0
			if _, err := poller.Result(ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: &zero}); err != nil && ctx.Err() == nil {
				f.fail("result", err)
			}
			mu.Lock()
			running = slices.DeleteFunc(running, func(id string) bool { return id == l.Operation.ID })
			mu.Unlock()
		}
	})
	return nil
}

func (f *fleet) fail(what string, err error) {
	if f.errs.Add(1) <= 5 {
		f.b.Logf("worker %s: %v", what, err)
	}
}

// gotChan is where the lease of operation id is announced: whoever comes first, the worker that has it or
// the submitter waiting for it, makes it.
func (f *fleet) gotChan(id string) chan time.Time {
	c, _ := f.got.LoadOrStore(id, make(chan time.Time, 1))
	return c.(chan time.Time)
}

// waitSent waits until n long-polls are written to the server and unanswered, then gives the server 5 s to
// take them in (one claim attempt each) before anything is measured.
func (f *fleet) waitSent(n int64) {
	for f.waiting.Load() < n {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
}

// timings are a hand-off phase's samples.
type timings struct {
	leased   []time.Duration // from the submit call until a waiting worker had its lease
	answered []time.Duration // until the submit was answered
	db       []time.Duration // the raw probe's (rawProbe), one of each beside each hand-off
	healthz  []time.Duration
	refused  []time.Duration
}

// handOffs submits n operations one after the other, for at most handOffTime, and returns, for each, the
// time from the submit call until a waiting worker had its lease, and until the submit was answered (the
// server answers after it handed the lease to a waiting poll: what the submit's time lacks of the first is
// the poll's answer on its way, on the server and in this process), with the raw probe's samples taken
// after each.
func (f *fleet) handOffs(ctx context.Context, admin *client.Client, probe *rawProbe, n int) (t timings) {
	for end := time.Now().Add(handOffTime); len(t.leased) < n && time.Now().Before(end); {
		start := time.Now()
		op, err := admin.Submit(ctx, api.OperationSpec{Pool: "p", Script: "echo deploy"})
		if err != nil {
			f.b.Fatal(err)
		}
		t.answered = append(t.answered, time.Since(start))
		select {
		case at := <-f.gotChan(op.ID):
			t.leased = append(t.leased, at.Sub(start))
		case <-time.After(time.Minute): // a figure, not a failure: late-handoffs
			f.late.Add(1)
		}
		f.got.Delete(op.ID)
		time.Sleep(time.Duration(rand.N(10)) * time.Millisecond) // apart, at random, as submits come
		db, healthz, refused := probe.sample(f.b, f.url)
		t.db, t.healthz, t.refused = append(t.db, db), append(t.healthz, healthz), append(t.refused, refused)
		time.Sleep(time.Duration(rand.N(10)) * time.Millisecond)
	}
	return t
}

// handOffTime bounds the time the hand-offs are timed for: a server that fell behind takes up to the
// client's timeout for each (the handoffs figure says how many were timed).
const handOffTime = 2 * time.Minute

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTicks is the process's utime+stime.
func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command may hold spaces: the fields start after its closing parenthesis; utime and stime are
	// fields 14 and 15, so the 12th and 13th after it.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	s, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + s
}

// status returns the kB fields of /proc/<pid>/status (VmRSS, VmHWM, ...).
func status(b *testing.B, pid int) map[string]int64 {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if v, found := strings.CutSuffix(strings.TrimSpace(v), " kB"); ok && found {
			out[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return out
}

// runQueueWait is how long the process's threads have waited on a CPU's run queue, runnable but not running
// (the second field of /proc/<pid>/task/*/schedstat): on a shared machine, the time the others took.
func runQueueWait(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total int64
	for _, t := range tasks {
		raw, _ := os.ReadFile(t)
		if f := strings.Fields(string(raw)); len(f) > 1 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			total += n
		}
	}
	return time.Duration(total)
}

// postgresPids finds the PostgreSQL server started in dir: the postmaster (its command line names dir) and
// its children.
func postgresPids(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var master int
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmd), dir) {
			master = pid
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(st), ')'); i > 0 {
			if f := strings.Fields(string(st[i+1:])); len(f) > 2 {
				parent[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	pids := []int{master}
	for pid, pp := range parent {
		if pp == master && master != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// dbCPU is the CPU of the PostgreSQL processes: utime+stime of each, and of the children the postmaster
// reaped (cutime+cstime, fields 16 and 17), so backends that ended still count.
func dbCPU(b *testing.B, pids func() []int) int64 {
	if pids == nil {
		return 0
	}
	var total int64
	for i, pid := range pids() {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		last := 12
		if i == 0 {
			last = 14
		}
		for _, f := range fields[11 : last+1] {
			n, _ := strconv.ParseInt(f, 10, 64)
			total += n
		}
	}
	return total
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func us(d time.Duration) float64 { return float64(d.Microseconds()) }
