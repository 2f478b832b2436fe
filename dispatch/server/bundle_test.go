package server

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"crypto/tls"
	"sync"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(stopPG{m})
}

const adminToken = "test-admin-token-0123456789"

// bundle is a real dispatch server on a loopback port over a real SQLite file, with an admin client.
type bundle struct {
	t     testing.TB
	ctx   context.Context
	srv   *Server
	st    *sqlite.Store
	url   string
	admin *client.Client
	stop  func() error // stops the server (once) and returns what Serve returned

	sleepMu  sync.Mutex
	sleeping int           // lease long-polls asleep in their wait (Server.asleep)
	slept    chan struct{} // closed and replaced when sleeping changes
}

// testConfig makes the slow safety re-check effectively never fire, so tests prove the immediate wake-ups.
func testConfig() Config {
	return Config{PollInterval: time.Hour}
}

// setup starts a server with cfg on a loopback port over a new SQLite file, and stops it when the test ends.
func setup(tb testing.TB, cfg Config) *bundle { return start(tb, cfg, nil) }

// start is setup serving TLS with tlsConfig when it is set.
func start(tb testing.TB, cfg Config, tlsConfig *tls.Config) *bundle {
	tb.Helper()
	st, err := sqlite.Open(tb.Context(), filepath.Join(tb.TempDir(), "dispatch.db"))
	if err != nil {
		tb.Fatal(err)
	}
	b := serveStore(tb, cfg, tlsConfig, st)
	b.st = st
	return b
}

// serveStore is start over st, any driver's store, which it closes when the test ends.
func serveStore(tb testing.TB, cfg Config, tlsConfig *tls.Config, st store.Store) *bundle {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return serveOn(tb, cfg, tlsConfig, st, ln, nil)
}

// serveOn serves a server over st on ln until the test ends, then closes st. Serve's error fails the test
// then, unless killed is set (the test broke the server on purpose).
func serveOn(tb testing.TB, cfg Config, tlsConfig *tls.Config, st store.Store, ln net.Listener, killed *atomic.Bool) *bundle {
	tb.Helper()
	srv, err := New(st, cfg, logrusDiscard())
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := srv.InitAdminToken(tb.Context(), adminToken); err != nil {
		tb.Fatal(err)
	}
	b := &bundle{t: tb, ctx: tb.Context(), srv: srv, slept: make(chan struct{})}
	srv.asleep = b.noteAsleep
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, tlsConfig) }()
	scheme := "http://"
	if tlsConfig != nil {
		scheme = "https://"
	}
	b.url = scheme + ln.Addr().String()
	var once sync.Once
	var serveErr error
	b.stop = func() error {
		once.Do(func() {
			cancel()
			serveErr = <-done
			_ = st.Close()
		})
		return serveErr
	}
	tb.Cleanup(func() {
		if err := b.stop(); err != nil && (killed == nil || !killed.Load()) {
			tb.Errorf("Serve: %v", err)
		}
	})
	b.admin = b.client(adminToken)
	return b
}

func (b *bundle) client(token string) *client.Client {
	b.t.Helper()
	c, err := client.New(client.Config{Server: b.url, Token: token, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 100 * time.Millisecond})
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

func (b *bundle) pool(name string) {
	b.t.Helper()
	if _, err := b.admin.CreatePool(b.ctx, name, ""); err != nil {
		b.t.Fatalf("CreatePool(%s): %v", name, err)
	}
}

// worker registers a worker into pools with capabilities and returns its client and id.
func (b *bundle) worker(name string, pools []string, caps ...string) (*client.Client, string) {
	b.t.Helper()
	token, id := b.register(name, pools, caps...)
	return b.client(token), id
}

// register registers a worker and returns its worker token and id.
func (b *bundle) register(name string, pools []string, caps ...string) (string, string) {
	b.t.Helper()
	tok, err := b.admin.CreateToken(b.ctx, pools, 0)
	if err != nil {
		b.t.Fatalf("CreateToken: %v", err)
	}
	reg, err := b.client(tok.Token).Register(b.ctx, api.RegisterRequest{Name: name, Pools: pools, Version: "1.0.0",
		Capabilities: caps, Capacity: 4})
	if err != nil {
		b.t.Fatalf("Register: %v", err)
	}
	return reg.WorkerToken, reg.WorkerID
}

func (b *bundle) submit(spec api.OperationSpec) api.Operation {
	b.t.Helper()
	if spec.Script == "" {
		spec.Script = "echo hello"
	}
	op, err := b.admin.Submit(b.ctx, spec)
	if err != nil {
		b.t.Fatalf("Submit: %v", err)
	}
	return op
}

func (b *bundle) lease(w *client.Client) *api.Lease {
	b.t.Helper()
	l, err := w.Lease(b.ctx, 0)
	if err != nil {
		b.t.Fatalf("Lease: %v", err)
	}
	if l == nil {
		b.t.Fatal("Lease returned nothing, want an operation")
	}
	return l
}

func (b *bundle) op(id string) api.Operation {
	b.t.Helper()
	op, err := b.admin.Operation(b.ctx, id)
	if err != nil {
		b.t.Fatalf("Operation(%s): %v", id, err)
	}
	return op
}

// waitOp waits until operation id satisfies cond, re-reading it on the server's signal for the operation (it
// ended, or new log lines came) rather than on a timer.
func (b *bundle) waitOp(what, id string, cond func(api.Operation) bool) api.Operation {
	b.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		changed := b.srv.logs.Watch(id) // before the read: a change committed after it still signals
		if op := b.op(id); cond(op) {
			return op
		}
		select {
		case <-changed:
		case <-timeout:
			b.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// noteAsleep is the server's asleep hook: it counts the long-polls asleep and signals each change.
func (b *bundle) noteAsleep(delta int) {
	b.sleepMu.Lock()
	defer b.sleepMu.Unlock()
	b.sleeping += delta
	close(b.slept)
	b.slept = make(chan struct{})
}

// waitAsleep waits, on the server's signal, until the number of lease long-polls asleep in their wait (ready
// for a hand-off) satisfies cond.
func (b *bundle) waitAsleep(what string, cond func(n int) bool) {
	b.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		b.sleepMu.Lock()
		n, changed := b.sleeping, b.slept
		b.sleepMu.Unlock()
		if cond(n) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			b.t.Fatalf("timed out waiting for %s (%d asleep)", what, n)
		}
	}
}

func logrusDiscard() *logrus.Logger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return log
}

func intp(i int) *int { return &i }

func line(seq int64, text string) api.LogLine {
	return api.LogLine{Seq: seq, Time: time.Now().UTC(), Stream: api.StreamStdout, Text: text}
}
