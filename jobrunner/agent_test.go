package jobrunner

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// recordingUpdater stands in for chartgen/selfupdate, the edge that needs a cluster and Helm (the e2e/chart
// tests run the real one): it records calls, and its Preflight fails with preflightErr when set.
type recordingUpdater struct {
	mu           sync.Mutex
	updates      []string
	preflights   int
	preflightErr error
}

func (u *recordingUpdater) Update(_ context.Context, version string, chart []byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.updates = append(u.updates, version)
	return nil
}

func (u *recordingUpdater) Preflight(context.Context, string, string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.preflights++
	return u.preflightErr
}

func (u *recordingUpdater) calls() ([]string, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.updates...), u.preflights
}

// A desired version starts the self-update at once, while an operation runs: the heartbeat that brings it
// drains the agent and asks for another heartbeat at once, which tells the server and calls the Updater; the
// next heartbeats do not call it again (the agent waits to be replaced). When the Updater
// then reports the upgrade failed, the agent takes operations again and reports why, its message capped to
// what the server accepts.
func TestSelfUpdateStartsWhileOperationsRun(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := dispatchtest.Start(t, dispatchtest.Options{}).Admin
	if _, err := admin.CreatePool(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "0.1.0", Capacity: 2})
	if _, err := admin.Submit(ctx, api.OperationSpec{Pool: "p", Syntax: "sh", Script: "sleep 600"}); err != nil {
		t.Fatal(err)
	}
	lease, err := w.Lease(ctx, 0)
	if err != nil || lease == nil {
		t.Fatalf("Lease = %v, %v", lease, err)
	}
	var chart bytes.Buffer
	zw := gzip.NewWriter(&chart)
	_, _ = zw.Write([]byte("a chart archive"))
	_ = zw.Close()
	if _, err := admin.UploadChart(ctx, "0.2.0", chart.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetDesiredVersion(ctx, "0.2.0"); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig()
	cfg.Namespace, cfg.WorkerName, cfg.Pools, cfg.Version = "ns", "w", []string{"p"}, "0.1.0"
	cfg.WorkerImage, cfg.ToolsImage = "octo-worker:0.1.0", "tools"
	// The heartbeat path never calls the API server; New requires a client.
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	up := &recordingUpdater{}
	a, err := New(cfg, Deps{Kube: kube, Dispatcher: w, WorkerID: reg.WorkerID, Log: log, Updater: up,
		FetchChart: w.DownloadChart})
	if err != nil {
		t.Fatal(err)
	}
	// Every health check passed (the checks' own tests are TestHealthOf and e2e/chart's TestWorkerHealthChecks).
	for _, name := range checkNames {
		a.checks.checks = append(a.checks.checks, api.Check{Name: name, OK: true})
	}
	a.checks.at = time.Now()
	// The leased operation runs (its supervision is not started: the heartbeat only lists it).
	a.ops[lease.Operation.ID] = newOperation(a.operationDeps(), *lease, false)
	worker := func() api.Worker {
		t.Helper()
		ws, err := admin.Workers(ctx)
		if err != nil || len(ws) != 1 {
			t.Fatalf("workers: %v %v", ws, err)
		}
		return ws[0]
	}

	hb := a.heartbeater()
	if _, again := hb.beat(ctx); !again || !a.draining {
		t.Fatalf("after the first heartbeat: again %v, draining %v; want the agent draining and heartbeating again at once", again, a.draining)
	}
	if wk := worker(); wk.Draining {
		t.Fatalf("the server saw draining before the drain began: %+v", wk)
	}
	if _, again := hb.beat(ctx); again {
		t.Fatal("the second heartbeat asks for another at once")
	}
	if updates, preflights := up.calls(); len(updates) != 1 || updates[0] != "0.2.0" || preflights != 1 {
		t.Fatalf("after the second heartbeat: updates %v, preflights %d; want the update to 0.2.0 started, after one preflight", updates, preflights)
	}
	if wk := worker(); !wk.Draining || wk.Running != 1 || wk.HealthMessage != "draining for a self-update to 0.2.0" {
		t.Fatalf("the server sees %+v when the upgrade starts; want the worker draining, still running its operation", wk)
	}
	hb.beat(ctx)
	hb.beat(ctx)
	if updates, _ := up.calls(); len(updates) != 1 {
		t.Fatalf("updates %v after four heartbeats; want one (the worker waits to be replaced)", updates)
	}
	if wk := worker(); !wk.Draining || wk.Running != 1 || !strings.HasPrefix(wk.HealthMessage, "self-update to 0.2.0 started") {
		t.Fatalf("the server sees %+v; want the worker draining, still running its operation, saying the self-update started", wk)
	}

	// The upgrade fails without replacing the worker; the reason is longer than the server accepts.
	reason := strings.Repeat("é", 3000)
	up.mu.Lock()
	up.preflightErr = errors.New(reason)
	up.mu.Unlock()
	hb.beat(ctx) // learns of the failure
	hb.beat(ctx) // reports it
	wk := worker()
	if wk.Draining || !strings.HasPrefix(wk.HealthMessage, "self-update to 0.2.0 failed: éé") {
		t.Fatalf("after the failure the server sees draining %v, message %.80q; want the worker taking operations and saying why", wk.Draining, wk.HealthMessage)
	}
	if len(wk.HealthMessage) > api.MaxMessageLen || !strings.HasSuffix(wk.HealthMessage, " [...]") || !utf8.ValidString(wk.HealthMessage) {
		t.Fatalf("health message of %d bytes, want it capped to %d", len(wk.HealthMessage), api.MaxMessageLen)
	}
	if updates, _ := up.calls(); len(updates) != 1 {
		t.Fatalf("updates %v; the failed chart must not be tried again at once", updates)
	}
}

// capMessage keeps short messages, cuts long ones within the limit on a character boundary, and repairs
// invalid UTF-8 (the server refuses it).
func TestCapMessage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		n        int
		want     string
	}{
		{"short", "ok", 10, "ok"},
		{"exactly the limit", "0123456789", 10, "0123456789"},
		{"ascii cut", strings.Repeat("x", 20), 10, "xxxx [...]"},
		{"multi-byte cut", strings.Repeat("é", 10), 10, "éé [...]"},
		{"invalid UTF-8", "a\xffb", 10, "a\uFFFDb"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := capMessage(c.in, c.n)
			if got != c.want || len(got) > c.n || !utf8.ValidString(got) {
				t.Fatalf("capMessage(%q, %d) = %q (%d bytes), want %q", c.in, c.n, got, len(got), c.want)
			}
		})
	}
}

// Each heartbeat carries the last round of checks: a failing check makes the worker unhealthy on the server,
// named with its reason, and the readiness probe fails with it; once it passes, both recover.
func TestHeartbeatReportsChecks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := dispatchtest.Start(t, dispatchtest.Options{}).Admin
	if _, err := admin.CreatePool(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "0.1.0", Capacity: 2})
	cfg := testConfig()
	cfg.Namespace, cfg.WorkerName, cfg.Pools, cfg.Version = "ns", "w", []string{"p"}, "0.1.0"
	// The heartbeat path never calls the API server here (no release); New requires a client.
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	a, err := New(cfg, Deps{Kube: kube, Dispatcher: w, WorkerID: reg.WorkerID, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	a.ready.Store(true)
	round := func(permissions string) {
		a.checks.mu.Lock()
		defer a.checks.mu.Unlock()
		a.checks.checks, a.checks.at = nil, time.Now().UTC()
		for _, name := range checkNames {
			c := api.Check{Name: name, OK: true}
			if name == api.CheckPermissions && permissions != "" {
				c = api.Check{Name: name, Message: permissions}
			}
			a.checks.checks = append(a.checks.checks, c)
		}
	}
	worker := func() api.Worker {
		t.Helper()
		ws, err := admin.Workers(ctx)
		if err != nil || len(ws) != 1 {
			t.Fatalf("workers: %v %v", ws, err)
		}
		return ws[0]
	}
	hb := a.heartbeater()

	const denied = "may not create jobs.batch in namespace ns"
	round(denied)
	hb.beat(ctx)
	if wk := worker(); wk.Healthy || wk.HealthMessage != "permissions: "+denied {
		t.Fatalf("the server sees healthy %v, message %q; want unhealthy, naming the failing check", wk.Healthy, wk.HealthMessage)
	}
	if err := a.Readiness(); err == nil || !strings.Contains(err.Error(), denied) {
		t.Fatalf("Readiness() = %v; want it to name the failing check", err)
	}
	round("")
	hb.beat(ctx)
	if wk := worker(); !wk.Healthy || wk.HealthMessage != "" {
		t.Fatalf("the server sees healthy %v, message %q; want healthy once every check passes", wk.Healthy, wk.HealthMessage)
	}
	if err := a.Readiness(); err != nil {
		t.Fatalf("Readiness() = %v once every check passes and the server answered", err)
	}
}
