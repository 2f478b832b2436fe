package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// The pre-delete hook's dispatch part: deregistration.run against a real dispatch server. Its Kubernetes
// part (jobrunner.ForgetIdentity: read the identity Secret, delete it only after run succeeds and only if it
// is unchanged) is tested against the local control plane in e2e/chart.

func TestClassifyDeregister(t *testing.T) {
	t.Parallel()
	status := func(code int) error { return &client.Error{Status: code, Body: api.Error{Error: "x"}} }
	tests := []struct {
		name string
		err  error
		want deregOutcome
	}{
		{"removed", nil, deregDone},
		{"token no longer works", status(http.StatusUnauthorized), deregGone},
		{"worker unknown", status(http.StatusNotFound), deregGone},
		{"wrapped 401", fmt.Errorf("deregistering: %w", status(http.StatusUnauthorized)), deregGone},
		{"connection refused", errors.New("POST /api/v1/worker/deregister: dial tcp 127.0.0.1:1: connect: connection refused"), deregRetry},
		{"deadline", context.DeadlineExceeded, deregRetry},
		{"server error", status(http.StatusInternalServerError), deregRetry},
		{"bad gateway", status(http.StatusBadGateway), deregRetry},
		{"unavailable", status(http.StatusServiceUnavailable), deregRetry},
		{"overloaded", status(http.StatusTooManyRequests), deregRetry},
		{"request timeout", status(http.StatusRequestTimeout), deregRetry},
		{"not a worker token", status(http.StatusForbidden), deregFail},
		{"bad request", status(http.StatusBadRequest), deregFail},
	}
	for _, tt := range tests {
		if got := classifyDeregister(tt.err); got != tt.want {
			t.Errorf("%s: classifyDeregister(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}

// deregFixture is a dispatch server with pool p and a worker that holds one operation.
type deregFixture struct {
	srv *dispatchtest.Server
	id  jobrunner.Identity
	op  string
}

func newDeregFixture(t *testing.T, o dispatchtest.Options) deregFixture {
	t.Helper()
	srv := dispatchtest.Start(t, o)
	if _, err := srv.Admin.CreatePool(t.Context(), "p", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, srv.Admin, api.RegisterRequest{Name: "release-1", Pools: []string{"p"}, Version: "test", Capacity: 1})
	op, err := srv.Admin.Submit(t.Context(), api.OperationSpec{Pool: "p", Script: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := w.Lease(t.Context(), 0); err != nil || l == nil {
		t.Fatalf("Lease = %+v, %v", l, err)
	}
	return deregFixture{srv: srv, id: jobrunner.Identity{WorkerID: reg.WorkerID, Token: reg.WorkerToken}, op: op.ID}
}

// deregFor returns a deregistration against url, logging into the returned hook.
func deregFor(t *testing.T, url string, timeout time.Duration) (deregistration, *test.Hook) {
	t.Helper()
	c, err := client.New(client.Config{Server: url, RetryMax: 2, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	log, hook := test.NewNullLogger()
	log.SetOutput(io.Discard)
	return deregistration{client: c, server: url, timeout: timeout, log: log.WithField("test", t.Name()), firstWait: 20 * time.Millisecond}, hook
}

// awaitLog returns a channel closed once l logs a message containing text at level.
func awaitLog(l *logrus.Logger, level logrus.Level, text string) <-chan struct{} {
	h := &logSignal{level: level, text: text, seen: make(chan struct{})}
	l.AddHook(h)
	return h.seen
}

type logSignal struct {
	level logrus.Level
	text  string
	once  sync.Once
	seen  chan struct{}
}

func (h *logSignal) Levels() []logrus.Level { return []logrus.Level{h.level} }

func (h *logSignal) Fire(e *logrus.Entry) error {
	if strings.Contains(e.Message, h.text) {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}

func logged(hook *test.Hook, level logrus.Level, text string) bool {
	for _, e := range hook.AllEntries() {
		if e.Level == level && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

// A worker deregisters: it leaves the list, the operation it held is lost; a second run (the hook run again,
// or an attempt whose reply was lost) meets 401 and is done too.
func TestDeregistrationRemovesTheWorker(t *testing.T) {
	t.Parallel()
	f := newDeregFixture(t, dispatchtest.Options{})
	d, hook := deregFor(t, f.srv.URL, 10*time.Second)
	if err := d.run(t.Context(), f.id); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !logged(hook, logrus.InfoLevel, "worker deregistered") {
		t.Errorf("no log line says the worker was deregistered: %+v", hook.AllEntries())
	}
	if ws, err := f.srv.Admin.Workers(t.Context()); err != nil || len(ws) != 0 {
		t.Errorf("workers after deregistering: %+v, %v", ws, err)
	}
	if op, err := f.srv.Admin.Operation(t.Context(), f.op); err != nil || op.State != api.StateLost {
		t.Errorf("the operation the worker held: %+v, %v; want lost", op, err)
	}
	hook.Reset()
	if err := d.run(t.Context(), f.id); err != nil {
		t.Fatalf("a second run: %v, want done", err)
	}
	if !logged(hook, logrus.InfoLevel, "no longer knows this worker") {
		t.Errorf("the second run did not say the worker was removed already: %+v", hook.AllEntries())
	}
}

// An admin removed the worker first (`workers remove`): the hook's 401 means done.
func TestDeregistrationAfterAdminRemoval(t *testing.T) {
	t.Parallel()
	f := newDeregFixture(t, dispatchtest.Options{})
	if _, err := f.srv.Admin.RemoveWorker(t.Context(), f.id.WorkerID); err != nil {
		t.Fatal(err)
	}
	d, _ := deregFor(t, f.srv.URL, 10*time.Second)
	if err := d.run(t.Context(), f.id); err != nil {
		t.Errorf("run after an admin removed the worker: %v, want done", err)
	}
}

// A refusal that retrying cannot change fails at once, saying how to remove the worker by hand.
func TestDeregistrationRefused(t *testing.T) {
	t.Parallel()
	f := newDeregFixture(t, dispatchtest.Options{})
	d, _ := deregFor(t, f.srv.URL, time.Minute)
	start := time.Now()
	err := d.run(t.Context(), jobrunner.Identity{WorkerID: f.id.WorkerID, Token: dispatchtest.AdminToken}) // not a worker token: 403
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "workers remove "+f.id.WorkerID) {
		t.Errorf("run with a token the server refuses: %v, want the 403 and the command to remove the worker by hand", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("a refusal took %s: it was retried", time.Since(start))
	}
	if ws, err := f.srv.Admin.Workers(t.Context()); err != nil || len(ws) != 1 {
		t.Errorf("the refusal removed the worker: %+v, %v", ws, err)
	}
}

// An unreachable server: the hook retries for its timeout, then fails and says what to do; with
// allowUnreachable it warns and succeeds instead.
func TestDeregistrationUnreachable(t *testing.T) {
	t.Parallel()
	url := "http://" + closedAddr(t)
	id := jobrunner.Identity{WorkerID: "wkr-0123456789abcdef", Token: "oww_token"}
	d, hook := deregFor(t, url, time.Second)
	start := time.Now()
	err := d.run(t.Context(), id)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "stayed unreachable for 1s") || !strings.Contains(err.Error(), "workers remove "+id.WorkerID) ||
		!strings.Contains(err.Error(), "run the uninstall again") {
		t.Errorf("run against an unreachable server: %v", err)
	}
	if took < time.Second || took > 10*time.Second {
		t.Errorf("run gave up after %s, want after its 1s timeout", took)
	}
	if !logged(hook, logrus.WarnLevel, "retrying") {
		t.Errorf("no retry was logged: %+v", hook.AllEntries())
	}

	d.allowUnreachable = true
	hook.Reset()
	if err := d.run(t.Context(), id); err != nil {
		t.Errorf("run with allowUnreachable: %v, want success", err)
	}
	if !logged(hook, logrus.WarnLevel, "workers remove "+id.WorkerID) {
		t.Errorf("allowUnreachable did not warn how to remove the worker by hand: %+v", hook.AllEntries())
	}
}

// The server restarts during the uninstall: the hook's retries reach it when it is back.
func TestDeregistrationWaitsForTheServer(t *testing.T) {
	t.Parallel()
	f := newDeregFixture(t, dispatchtest.Options{})
	f.srv.Stop()
	d, _ := deregFor(t, f.srv.URL, 30*time.Second)
	retrying := awaitLog(d.log.Logger, logrus.WarnLevel, "retrying")
	done := make(chan error, 1)
	go func() { done <- d.run(t.Context(), f.id) }()
	select {
	case <-retrying:
	case err := <-done:
		t.Fatalf("run did not retry while the server was down: it returned %v", err)
	}
	back := dispatchtest.Start(t, dispatchtest.Options{DB: f.srv.DB, Addr: f.srv.Addr})
	if err := <-done; err != nil {
		t.Fatalf("run across a server restart: %v", err)
	}
	if ws, err := back.Admin.Workers(t.Context()); err != nil || len(ws) != 0 {
		t.Errorf("workers after deregistering: %+v, %v", ws, err)
	}
}

// A Secret without a token cannot deregister anything: run calls nobody and lets the Secret go.
func TestDeregistrationWithoutToken(t *testing.T) {
	t.Parallel()
	d, hook := deregFor(t, "http://"+closedAddr(t), time.Minute)
	start := time.Now()
	if err := d.run(t.Context(), jobrunner.Identity{WorkerID: "wkr-0123456789abcdef"}); err != nil {
		t.Errorf("run without a token: %v, want nil", err)
	}
	if time.Since(start) > 5*time.Second || !logged(hook, logrus.WarnLevel, "lacks the worker id or token") {
		t.Errorf("run without a token took %s and logged %+v", time.Since(start), hook.AllEntries())
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// The hook command refuses to start without what names the Secret and the server.
func TestAgentDeregisterFlags(t *testing.T) {
	// Not parallel: see TestOneArgumentRequired.
	t.Setenv("OCTO_NAMESPACE", "")
	t.Setenv("OCTO_RELEASE_NAME", "")
	t.Setenv("OCTO_SERVER", "")
	t.Setenv("KUBECONFIG", "")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--release", "r", "--server", "http://127.0.0.1:1"}, "--namespace (OCTO_NAMESPACE) is required"},
		{[]string{"--namespace", "n", "--server", "http://127.0.0.1:1"}, "give --release (OCTO_RELEASE_NAME) or --identity-secret"},
		{[]string{"--namespace", "n", "--release", "r"}, "--server: no dispatch server URL"},
		{[]string{"--namespace", "n", "--release", "r", "--server", "ftp://x"}, "--server: server URL"},
		{[]string{"--namespace", "n", "--release", "r", "--server", "http://127.0.0.1:1", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"--namespace", "n", "--identity-secret", "s", "--server", "http://127.0.0.1:1"}, "not in a cluster"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := cliRun(t.Context(), append([]string{"agent", "deregister"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
				t.Errorf("error %v (exit code %d), want %q with exit code 2", err, exitCode(err), tt.want)
			}
		})
	}
}
