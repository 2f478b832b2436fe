package client_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestFollowResumesAcrossServerRestart: a follower whose stream is cut by a server restart resumes after the
// last line it got, so it sees every line exactly once and then the end.
func TestFollowResumesAcrossServerRestart(t *testing.T) {
	t.Parallel()
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	c, err := client.New(client.Config{Server: srv.URL, Token: dispatchtest.AdminToken, RetryWaitMin: 5 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.CreatePool(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	w, _ := dispatchtest.Register(t, c, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "1", Capacity: 1})
	op, err := c.Submit(ctx, api.OperationSpec{Pool: "p", Script: "x"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := w.Lease(ctx, 0)
	if err != nil || l == nil {
		t.Fatalf("Lease = %v, %v", l, err)
	}
	appendLine := func(seq int64) {
		t.Helper()
		if _, err := w.AppendLogs(ctx, op.ID, l.LeaseID, []api.LogLine{{Seq: seq, Stream: "stdout", Text: fmt.Sprint("line ", seq)}}); err != nil {
			t.Fatal(err)
		}
	}
	appendLine(1)
	got := make(chan string, 10)
	res := make(chan error, 1)
	var end *api.LogEnd
	go func() {
		var err error
		end, err = c.Logs(ctx, op.ID, client.LogsOptions{Follow: true}, func(l api.LogLine) error { got <- l.Text; return nil })
		res <- err
	}()
	if first := <-got; first != "line 1" {
		t.Fatalf("first line %q", first)
	}
	srv.Stop() // cuts the stream without an end record
	dispatchtest.Start(t, dispatchtest.Options{DB: srv.DB, Addr: srv.Addr})
	appendLine(2)
	appendLine(3)
	if _, err := w.Result(ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: new(int), LastSeq: 3}); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("Logs: %v", err)
	}
	close(got)
	var rest []string
	for s := range got {
		rest = append(rest, s)
	}
	if fmt.Sprint(rest) != "[line 2 line 3]" || end == nil || end.State != api.StateSucceeded {
		t.Errorf("after the restart got %q and end %+v; want lines 2 and 3 once, then succeeded", rest, end)
	}
}

// TestRetryPolicy: what is safe to repeat is retried through 503s; a submit is not (it could run twice).
func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	var calls sync.Map // path -> *atomic.Int32
	failFirst := 2
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := calls.LoadOrStore(r.Method+" "+r.URL.Path, new(atomic.Int32))
		if int(n.(*atomic.Int32).Add(1)) <= failFirst {
			http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	})}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	c, err := client.New(client.Config{Server: "http://" + ln.Addr().String(), Token: "t", RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	count := func(key string) int32 {
		n, ok := calls.Load(key)
		if !ok {
			return 0
		}
		return n.(*atomic.Int32).Load()
	}
	tests := []struct {
		name  string
		call  func() error
		key   string
		retry bool
	}{
		{"heartbeat", func() error { _, err := c.Heartbeat(ctx, api.HeartbeatRequest{}); return err }, "POST /api/v1/worker/heartbeat", true},
		{"logs", func() error { _, err := c.AppendLogs(ctx, "op", "l", nil); return err }, "POST /api/v1/worker/operations/op/logs", true},
		{"result", func() error { _, err := c.Result(ctx, "op", api.ResultRequest{}); return err }, "POST /api/v1/worker/operations/op/result", true},
		{"lease", func() error { _, err := c.Lease(ctx, 0); return err }, "POST /api/v1/worker/lease", true},
		{"list", func() error { _, err := c.Operations(ctx, client.ListOptions{}); return err }, "GET /api/v1/operations", true},
		{"submit", func() error { _, err := c.Submit(ctx, api.OperationSpec{}); return err }, "POST /api/v1/operations", false},
		{"register", func() error { _, err := c.Register(ctx, api.RegisterRequest{}); return err }, "POST /api/v1/worker/register", false},
		// A repeat after a removal that went through would be refused (404, 401): the caller decides.
		{"remove worker", func() error { _, err := c.RemoveWorker(ctx, "wkr-1"); return err }, "DELETE /api/v1/workers/wkr-1", false},
		{"deregister", func() error { _, err := c.Deregister(ctx); return err }, "POST /api/v1/worker/deregister", false},
	}
	for _, tt := range tests {
		err := tt.call()
		n := count(tt.key)
		if tt.retry && (err != nil || n != 3) {
			t.Errorf("%s: %d calls, %v; want it retried through two 503s", tt.name, n, err)
		}
		var ce *client.Error
		if !tt.retry && (n != 1 || !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable) {
			t.Errorf("%s: %d calls, %v; want one call and the 503", tt.name, n, err)
		}
	}
}

// TestCreateRetriedWhenNotSent: a refused connection means the request never arrived, so even a create (not
// safe to repeat once sent) is retried; it succeeds once the server is up.
func TestCreateRetriedWhenNotSent(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	refused := make(chan struct{})
	var once sync.Once
	tr := roundTripper(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			once.Do(func() { close(refused) })
		}
		return resp, err
	})
	c, err := client.New(client.Config{Server: "http://" + addr, Token: dispatchtest.AdminToken, HTTPClient: &http.Client{Transport: tr},
		RetryMax: 100, RetryWaitMin: 20 * time.Millisecond, RetryWaitMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { _, err := c.CreatePool(t.Context(), "p", ""); res <- err }()
	<-refused
	dispatchtest.Start(t, dispatchtest.Options{Addr: addr})
	if err := <-res; err != nil {
		t.Fatalf("a create refused at first did not succeed once the server came up: %v", err)
	}
	pools, err := c.Pools(t.Context())
	if err != nil || len(pools) != 1 {
		t.Errorf("pools after the retried create: %+v, %v; want exactly one", pools, err)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
