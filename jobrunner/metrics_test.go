package jobrunner

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// TestWorkerMetrics reports one operation through an agent to a real dispatch server and reads each metric
// where it changes.
func TestWorkerMetrics(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := dispatchtest.Start(t, dispatchtest.Options{}).Admin
	if _, err := admin.CreatePool(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "0.1.0", Capacity: 2})
	cfg := testConfig()
	cfg.Namespace, cfg.WorkerName, cfg.Pools, cfg.Version = "ns", "w", []string{"p"}, "0.1.0"
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"}) // never called here
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	a, err := New(cfg, Deps{Kube: kube, Dispatcher: w, WorkerID: reg.WorkerID, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	m := a.Metrics()
	gauges := func(what string, running, backlog float64) {
		t.Helper()
		if r, b := testutil.ToFloat64(m.running), testutil.ToFloat64(m.backlog); r != running || b != backlog {
			t.Errorf("%s: %v running, backlog %v; want %v and %v", what, r, b, running, backlog)
		}
	}
	gauges("idle", 0, 0)

	if _, err := admin.Submit(ctx, api.OperationSpec{Pool: "p", Syntax: "sh", Script: "true"}); err != nil {
		t.Fatal(err)
	}
	lease, err := w.Lease(ctx, 0)
	if err != nil || lease == nil {
		t.Fatalf("Lease = %v, %v", lease, err)
	}
	op := newOperation(a.operationDeps(), *lease, false)
	a.mu.Lock()
	a.ops[op.id] = op
	a.mu.Unlock()
	for i := 1; i <= 3; i++ { // queued before the shipper runs: the backlog
		if err := op.ship.Add(ctx, api.LogLine{Seq: int64(i), Time: time.Now(), Stream: api.StreamStdout, Text: "line"}); err != nil {
			t.Fatal(err)
		}
	}
	gauges("three lines queued", 1, 3)
	shipCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); op.ship.Run(shipCtx) }()
	defer func() { stop(); <-done }()
	if _, err := op.ship.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.linesShipped); got != 3 {
		t.Errorf("lines shipped: %v, want 3", got)
	}
	gauges("delivered", 1, 0)

	created := time.Now()
	op.jobCreated = created
	op.memory.PendingSince = created.Add(10 * time.Second)
	op.measure(verdict{}, created.Add(100*time.Second)) // scheduled: the judge forgets PendingSince
	op.memory = memory{}
	op.measure(verdict{Follow: "pod-1"}, created.Add(2*time.Minute))
	op.fol = &follower{pod: "pod-1"}
	op.measure(verdict{Follow: "pod-2"}, created.Add(time.Hour)) // a second pod (a retry) is not a start
	for _, c := range []struct {
		name       string
		h          prometheus.Histogram
		count, sum float64
	}{{"capacity wait", m.capacityWait, 1, 90}, {"pod start", m.podStart, 1, 120}} {
		count, sum := histogram(t, c.h)
		if count != c.count || sum != c.sum {
			t.Errorf("%s: %v observations summing to %v; want %v and %v", c.name, count, sum, c.count, c.sum)
		}
	}

	op.finish(ctx, &outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: "the script exited with code 0"})
	if got := testutil.ToFloat64(m.finished.WithLabelValues("succeeded")); got != 1 {
		t.Errorf("operations finished succeeded: %v, want 1", got)
	}
}

// histogram returns h's sample count and sum.
func histogram(t *testing.T, h prometheus.Histogram) (count, sum float64) {
	t.Helper()
	var d dto.Metric
	if err := h.Write(&d); err != nil {
		t.Fatal(err)
	}
	return float64(d.GetHistogram().GetSampleCount()), d.GetHistogram().GetSampleSum()
}

// TestKubeRequestMetrics: client-go counts each request through RegisterKubeMetrics' adapter.
func TestKubeRequestMetrics(t *testing.T) {
	RegisterKubeMetrics()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
	}))
	defer srv.Close()
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	counter := kubeRequests.WithLabelValues("404", "GET")
	before := testutil.ToFloat64(counter)
	if _, err := kube.CoreV1().Namespaces().Get(t.Context(), "x", metav1.GetOptions{}); err == nil {
		t.Fatal("Get answered, want NotFound")
	}
	if got := testutil.ToFloat64(counter) - before; got != 1 {
		t.Errorf("GET requests answered 404: %v more, want 1", got)
	}
}
