package jobrunner

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	"k8s.io/client-go/tools/metrics"
)

// Process-wide counters (the only global state: metrics). They are served as Prometheus text on /metrics
// and used by the benchmarks (API requests while idle and per operation).
var (
	kubeRequests       atomic.Int64
	operationsFinished atomic.Int64
)

type requestCounter struct{}

func (requestCounter) Increment(context.Context, string, string, string) { kubeRequests.Add(1) }

// RegisterKubeMetrics makes client-go count every Kubernetes API request (watches count once, when they
// start). Call it once, before creating clients.
func RegisterKubeMetrics() {
	metrics.Register(metrics.RegisterOpts{RequestResult: requestCounter{}})
}

func (a *Agent) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	running := a.running()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP octo_worker_kube_requests_total Kubernetes API requests made by the worker.\n# TYPE octo_worker_kube_requests_total counter\nocto_worker_kube_requests_total %d\n", kubeRequests.Load())
	fmt.Fprintf(w, "# HELP octo_worker_operations_running Operations the worker supervises now.\n# TYPE octo_worker_operations_running gauge\nocto_worker_operations_running %d\n", running)
	fmt.Fprintf(w, "# HELP octo_worker_operations_finished_total Operations the worker reported a result for.\n# TYPE octo_worker_operations_finished_total counter\nocto_worker_operations_finished_total %d\n", operationsFinished.Load())
}
