package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
	"github.com/octo-worker/octo-worker/e2e/proc"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// faultSize sizes a fault run. The defaults fit CI; the environment sizes the full run (faultKnobs).
type faultSize struct {
	ops, workerKills, serverRestarts, apiRestarts, agents int
	lostReplies                                           int // per mille of the servers' replies, while faults happen
	seed                                                  uint64
}

// faultKnobs are the environment variables of a fault run, with their CI defaults. The full run:
// OCTO_FAULT_OPS=300 OCTO_FAULT_WORKER_KILLS=50 OCTO_FAULT_SERVER_RESTARTS=10 OCTO_FAULT_APISERVER_RESTARTS=3.
var faultKnobs = []struct {
	env   string
	def   int
	field func(*faultSize) *int
}{
	{"OCTO_FAULT_OPS", 40, func(s *faultSize) *int { return &s.ops }},
	{"OCTO_FAULT_WORKER_KILLS", 8, func(s *faultSize) *int { return &s.workerKills }},
	{"OCTO_FAULT_SERVER_RESTARTS", 4, func(s *faultSize) *int { return &s.serverRestarts }},
	{"OCTO_FAULT_APISERVER_RESTARTS", 1, func(s *faultSize) *int { return &s.apiRestarts }},
	{"OCTO_FAULT_AGENTS", 3, func(s *faultSize) *int { return &s.agents }},
	{"OCTO_FAULT_LOST_REPLIES", 10, func(s *faultSize) *int { return &s.lostReplies }},
}

func faultSizeFromEnv(t *testing.T) faultSize {
	t.Helper()
	var s faultSize
	for _, k := range faultKnobs {
		v := k.def
		if text := os.Getenv(k.env); text != "" {
			n, err := strconv.Atoi(text)
			if err != nil || n < 0 || (n == 0 && (k.env == "OCTO_FAULT_OPS" || k.env == "OCTO_FAULT_AGENTS")) || (n > 1000 && k.env == "OCTO_FAULT_LOST_REPLIES") {
				t.Fatalf("%s=%q: give a whole number (at least 1 for operations and agents, per mille up to 1000 for lost replies)", k.env, text)
			}
			v = n
		}
		*k.field(&s) = v
	}
	// The seed replays the order of the faults and whom they hit, not their timing.
	s.seed = uint64(time.Now().UnixNano())
	if text := os.Getenv("OCTO_FAULT_SEED"); text != "" {
		n, err := strconv.ParseUint(text, 10, 64)
		if err != nil {
			t.Fatalf("OCTO_FAULT_SEED=%q: give the seed a previous run logged (a whole number)", text)
		}
		s.seed = n
	}
	return s
}

// The fault run: operations writing numbered lines run on several agents while a chaos loop SIGKILLs and
// restarts agents, SIGKILLs and restarts dispatch servers and restarts the kube-apiserver. The agents reach
// the servers through a failover TCP proxy (what a load balancer or a Service is to them), which meanwhile
// loses some of the servers' replies (the server acted, the client never heard), so every retry must be
// idempotent, also when it reaches the other server. At the end every
// operation ended with its script's exit code, every line is stored exactly once and in order, no operation
// is left leased and no Job, Secret or pod is left behind. One SQLite server is the baseline. Not parallel:
// it restarts the API server every test of the package shares.
func TestFaultRun(t *testing.T) {
	size := faultSizeFromEnv(t)
	t.Run("sqlite-one-server", func(t *testing.T) {
		runFaults(t, size, 1, filepath.Join(t.TempDir(), "octo-worker.db"))
	})
	t.Run("postgres-two-servers", func(t *testing.T) {
		runFaults(t, size, 2, postgresDB(t))
	})
}

// postgresDB returns the URL of an empty database on a PostgreSQL server of this test's own (pgtest.Start,
// stopped when the test ends), or on $OCTO_TEST_POSTGRES. Without PostgreSQL binaries pgtest.URL skips the
// test, or fails it when $CI is set.
func postgresDB(t *testing.T) string {
	t.Helper()
	if _, err := pgtest.BinDir(); err != nil || os.Getenv("OCTO_TEST_POSTGRES") != "" {
		return pgtest.URL(t)
	}
	// Not in t.TempDir(): the server runs as an unprivileged user, who cannot enter the test's 0700 directory.
	dir, err := os.MkdirTemp("", "octo-e2e-pg-")
	if err != nil {
		t.Fatal(err)
	}
	// On the spawn thread: the server gets Pdeathsig, and the process node of this test binary ends threads.
	var srv *pgtest.Server
	proc.OnSpawnThread(func() { srv, err = pgtest.Start(dir) })
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("stopping PostgreSQL: %v", err)
		}
		os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := srv.CreateDatabase(ctx, "octo")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// faultRun is one fault run's world.
type faultRun struct {
	t          *testing.T
	size       faultSize
	db         string // the servers' --db
	packages   string // and their --packages-dir
	adminToken string
	ports      []int // one per server
	servers    []*proc.Proc
	proxy      *tcpProxy
	admin      *client.Client
	agents     []*env
	rng        *rand.Rand
}

// faultOp is what operation i of a run does: n numbered lines, then exit code.
func faultOp(i int) (n int, code int) {
	n = 100 + i*37%200
	if i%5 == 4 {
		code = 3
	}
	return n, code
}

func faultLine(i, k int) string { return fmt.Sprintf("op %d line %d", i, k) }

func runFaults(t *testing.T, size faultSize, servers int, db string) {
	r := &faultRun{t: t, size: size, db: db, packages: t.TempDir(), adminToken: fmt.Sprintf("admin-token-%d", time.Now().UnixNano()),
		rng: rand.New(rand.NewPCG(size.seed, 0))}
	t.Logf("fault run: %d operations on %d agents and %d server(s); %d worker kills, %d server restarts, %d API server restarts, %d‰ of replies lost; OCTO_FAULT_SEED=%d",
		size.ops, size.agents, servers, size.workerKills, size.serverRestarts, size.apiRestarts, size.lostReplies, size.seed)
	var upstreams []string
	for i := 0; i < servers; i++ {
		r.ports = append(r.ports, proc.FreePort(t))
		upstreams = append(upstreams, fmt.Sprintf("127.0.0.1:%d", r.ports[i]))
	}
	r.proxy = startProxy(t, upstreams...)
	r.servers = make([]*proc.Proc, servers)
	for i := range r.servers {
		r.startServer(i)
	}
	r.startAgents()

	ctx := context.Background()
	began := time.Now()
	ids := make([]string, size.ops)
	for i := range ids {
		n, code := faultOp(i)
		op, err := r.admin.Submit(ctx, api.OperationSpec{Pool: pool, Name: fmt.Sprintf("fault-%d", i),
			Script: fmt.Sprintf("for k in $(seq 1 %d); do echo \"op %d line $k\"; if [ $((k %% 10)) = 0 ]; then sleep 0.2; fi; done; exit %d", n, i, code)})
		if err != nil {
			t.Fatalf("submitting operation %d: %v", i, err)
		}
		ids[i] = op.ID
	}

	// The faults, in a random order, spread over the run: fault j happens once (j+1)/(faults+1) of the
	// operations have ended, each after the previous one's process is back.
	var faults []string
	for kind, n := range map[string]int{"worker": size.workerKills, "server": size.serverRestarts, "apiserver": size.apiRestarts} {
		for range n {
			faults = append(faults, kind)
		}
	}
	r.rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	var lost atomic.Int64
	lose := func() bool {
		if rand.IntN(1000) >= size.lostReplies {
			return false
		}
		lost.Add(1)
		return true
	}
	r.proxy.lose.Store(&lose)
	amid := 0 // faults that fell among running operations
	for j, kind := range faults {
		ended := r.waitEnded((j+1)*size.ops/(len(faults)+1), 10*time.Minute)
		if ended < size.ops {
			amid++
		}
		at, what := time.Now(), kind
		switch kind {
		case "worker":
			i := r.rng.IntN(len(r.agents))
			_ = r.agents[i].agent.Stop(syscall.SIGKILL, time.Second)
			r.agents[i].restartAgent()
			what = fmt.Sprintf("agent %d killed", i+1)
		case "server":
			i := r.rng.IntN(len(r.servers))
			_ = r.servers[i].Stop(syscall.SIGKILL, time.Second)
			r.startServer(i)
			what = fmt.Sprintf("server %d killed", i+1)
		case "apiserver":
			if err := kube.RestartAPIServer(ctx); err != nil {
				t.Fatal(err)
			}
			what = "kube-apiserver killed"
		}
		t.Logf("fault %d/%d at %s, %d operations ended: %s, back after %s", j+1, len(faults),
			at.Sub(began).Round(time.Second), ended, what, time.Since(at).Round(100*time.Millisecond))
	}
	r.proxy.lose.Store(nil)
	r.waitEnded(size.ops, 10*time.Minute+time.Duration(size.ops)*2*time.Second)
	ran := time.Since(began)

	r.checkOperations(ids)
	r.checkNothingLeft()
	t.Logf("fault run done in %s (operations submitted to all ended; then checked): %d operations, %d worker kills, %d server restarts, %d API server restarts (%d of the %d faults among running operations), %d replies lost",
		ran.Round(time.Second), size.ops, size.workerKills, size.serverRestarts, size.apiRestarts, amid, len(faults), lost.Load())
}

func (r *faultRun) startServer(i int) {
	addr := fmt.Sprintf("127.0.0.1:%d", r.ports[i])
	r.servers[i] = proc.Start(r.t, binary, fmt.Sprintf("server-%d", i+1), nil, "server",
		"--listen", addr, "--db", r.db, "--packages-dir", r.packages, "--admin-token", r.adminToken)
	r.servers[i].WaitHTTP(r.t, "http://"+addr+"/healthz", time.Minute)
}

// faultValues run 3 operations at once per agent, so that operations end one by one rather than in waves
// and the faults fall among running operations, and keep finished Jobs 20 s, longer than a killed worker
// takes to come back (the default is 600 s, longer than the lease TTL): a Job deleted before its worker read
// its end takes its output and exit code with it, and the run would measure the TTL, not the faults.
const faultValues = "worker:\n  concurrency: 3\nscriptPods:\n  ttlSecondsAfterFinished: 20\n"

// startAgents creates the pool and starts the agents, each in its own namespace, all pointed at the proxy.
func (r *faultRun) startAgents() {
	t := r.t
	var err error
	if r.admin, err = client.New(client.Config{Server: "http://" + r.proxy.addr, Token: r.adminToken}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.admin.CreatePool(ctx, pool, "fault run"); err != nil {
		t.Fatalf("creating pool: %v", err)
	}
	tok, err := r.admin.CreateToken(ctx, []string{pool}, time.Hour)
	if err != nil {
		t.Fatalf("creating registration token: %v", err)
	}
	_, port, _ := strings.Cut(r.proxy.addr, ":")
	proxyPort, _ := strconv.Atoi(port)
	for range r.size.agents {
		e := &env{t: t, dir: t.TempDir(), serverPort: proxyPort, adminToken: r.adminToken, admin: r.admin, regToken: tok.Token,
			healthPort: proc.FreePort(t), agentOpts: agentOptions{values: faultValues}}
		e.ns = kube.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
		e.startAgent()
		r.agents = append(r.agents, e)
	}
}

// waitEnded waits until at least n of the run's operations have ended and returns how many have. It reads
// through the proxy, so a read that fails while servers restart is retried.
func (r *faultRun) waitEnded(n int, timeout time.Duration) int {
	r.t.Helper()
	ended := 0
	waitUntil(r.t, timeout, fmt.Sprintf("%d operations to end", n), func() bool {
		ops, err := r.admin.Operations(context.Background(), client.ListOptions{Pool: pool, Limit: 1000})
		if err != nil {
			return false
		}
		ended = 0
		for _, op := range ops {
			if op.State.Terminal() {
				ended++
			}
		}
		return ended >= n
	})
	return ended
}

// checkOperations checks that the server holds exactly the operations submitted, each ended with its
// script's exit code and its lines stored exactly once, in order.
func (r *faultRun) checkOperations(ids []string) {
	t := r.t
	ctx := context.Background()
	ops, err := r.admin.Operations(ctx, client.ListOptions{Pool: pool, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != len(ids) {
		t.Errorf("the server holds %d operations, want the %d submitted", len(ops), len(ids))
	}
	lines, bad, readopted := 0, 0, 0
	for i, id := range ids {
		n, code := faultOp(i)
		want := api.StateSucceeded
		if code != 0 {
			want = api.StateFailed
		}
		op := r.get(id)
		if op.State != want || op.ExitCode == nil || *op.ExitCode != code {
			t.Errorf("operation %d (%s): %s exit %v (%s), want %s exit %d", i, id, op.State, deref(op.ExitCode), op.Message, want, code)
			bad++
			continue
		}
		var stored []api.LogLine
		if _, err := r.admin.Logs(ctx, id, client.LogsOptions{}, func(l api.LogLine) error { stored = append(stored, l); return nil }); err != nil {
			t.Fatalf("reading the log of %s: %v", id, err)
		}
		if strings.Contains(systemText(stored), "worker restarted") {
			readopted++
		}
		got, err := runnerLines(stored, int64(n))
		for k := 0; err == nil && k < n; k++ {
			if got[k].Text != faultLine(i, k+1) {
				err = fmt.Errorf("line %d is %q, want %q", k+1, got[k].Text, faultLine(i, k+1))
			}
		}
		if err != nil {
			t.Errorf("operation %d (%s): %v", i, id, err)
			bad++
		}
		lines += len(got)
	}
	t.Logf("%d operations checked, %d with a wrong end or log; %d runner lines stored exactly once, in order; %d operations taken up again by a restarted worker",
		len(ids), bad, lines, readopted)
}

func (r *faultRun) get(id string) api.Operation {
	op, err := r.admin.Operation(context.Background(), id)
	if err != nil {
		r.t.Fatalf("getting operation %s: %v", id, err)
	}
	return op
}

// checkNothingLeft waits until no worker reports an operation running and no Job, Secret or pod of an
// operation is left in the agents' namespaces (the Jobs' TTL, faultValues; Secrets and pods go with their Job).
func (r *faultRun) checkNothingLeft() {
	t := r.t
	ctx := context.Background()
	waitUntil(t, time.Minute, "every worker to report nothing running", func() bool {
		ws, err := r.admin.Workers(ctx)
		if err != nil || len(ws) != len(r.agents) {
			return false
		}
		for _, w := range ws {
			if w.Running != 0 {
				return false
			}
		}
		return true
	})
	sel := metav1.ListOptions{LabelSelector: jobrunner.LabelOperation}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		left := ""
		for _, a := range r.agents {
			jobs, jerr := kube.Client.BatchV1().Jobs(a.ns).List(ctx, sel)
			secrets, serr := kube.Client.CoreV1().Secrets(a.ns).List(ctx, sel)
			pods, perr := kube.Client.CoreV1().Pods(a.ns).List(ctx, sel)
			if err := errors.Join(jerr, serr, perr); err != nil {
				left += fmt.Sprintf(" %s: %v;", a.ns, err)
			} else if n := len(jobs.Items) + len(secrets.Items) + len(pods.Items); n > 0 {
				left += fmt.Sprintf(" %s: %d Jobs, %d Secrets, %d pods;", a.ns, len(jobs.Items), len(secrets.Items), len(pods.Items))
			}
		}
		if left == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("3 minutes after the run, operations' objects are left:%s", left)
		}
	}
}
