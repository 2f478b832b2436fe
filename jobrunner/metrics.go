package jobrunner

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/tools/metrics"
)

// kubeRequests counts Kubernetes API requests through the adapter RegisterKubeMetrics gives client-go, which
// takes adapters once per process: so it is process-wide (every agent's registry serves it), the package's
// only global state. The benchmarks read it (API requests while idle and per operation).
var kubeRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "octo_worker_kube_requests_total",
	Help: "Kubernetes API requests (a watch once, when it starts)."},
	[]string{"code", "method"})

type kubeRequestResult struct{}

func (kubeRequestResult) Increment(_ context.Context, code, method, _ string) {
	kubeRequests.WithLabelValues(code, method).Inc()
}

// RegisterKubeMetrics makes client-go count every Kubernetes API request. Call it once, before creating
// clients (client-go keeps only the first registration of a process).
func RegisterKubeMetrics() {
	metrics.Register(metrics.RegisterOpts{RequestResult: kubeRequestResult{}})
}

// Metrics are an agent's Prometheus metrics (`octo_worker_*`, see the README), in a registry of its own so
// that agents in one process (tests) do not share counts. Counters and histograms change where the event
// happens; running and backlog read the agent when scraped. Its methods do nothing on a nil *Metrics.
type Metrics struct {
	reg              *prometheus.Registry
	finished         *prometheus.CounterVec // state
	podStart         prometheus.Histogram
	capacityWait     prometheus.Histogram
	linesShipped     prometheus.Counter
	running, backlog prometheus.GaugeFunc
}

func newMetrics(a *Agent) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "octo_worker_operations_finished_total",
			Help: "Results reported."}, []string{"state"}),
		podStart: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "octo_worker_pod_start_seconds",
			Help: "Job created to script container running.", Buckets: prometheus.ExponentialBuckets(0.5, 2, 12)}),
		capacityWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "octo_worker_capacity_wait_seconds",
			Help: "Time a script pod waited unschedulable.", Buckets: prometheus.ExponentialBuckets(1, 2.5, 10)}),
		linesShipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "octo_worker_log_lines_shipped_total",
			Help: "Log lines the server acknowledged."}),
	}
	m.running = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "octo_worker_operations_running",
		Help: "Operations the worker supervises now."}, func() float64 { return float64(a.running()) })
	m.backlog = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "octo_worker_shipper_backlog_lines",
		Help: "Log lines not acknowledged yet."},
		func() float64 { return float64(a.backlog()) })
	m.reg.MustRegister(m.finished, m.podStart, m.capacityWait, m.linesShipped, m.running, m.backlog, kubeRequests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *Metrics) operationFinished(state string) {
	if m != nil {
		m.finished.WithLabelValues(state).Inc()
	}
}

func (m *Metrics) podStarted(d time.Duration) {
	if m != nil {
		m.podStart.Observe(max(d, 0).Seconds())
	}
}

func (m *Metrics) waitedForCapacity(d time.Duration) {
	if m != nil {
		m.capacityWait.Observe(max(d, 0).Seconds())
	}
}

func (m *Metrics) shipped(n int) {
	if m != nil && n > 0 {
		m.linesShipped.Add(float64(n))
	}
}

// Metrics returns the agent's metrics.
func (a *Agent) Metrics() *Metrics { return a.metrics }

// backlog is how many log lines the operations supervised now hold unacknowledged.
func (a *Agent) backlog() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, o := range a.ops {
		n += o.ship.backlog()
	}
	return n
}

// measure records what verdict v, reached at now, says about the pod's start: a wait for capacity that ended
// (the judge forgets when it began, or gives up), and the first pod's script container seen running (its Job
// created by this agent). Call it before o.memory takes v's.
func (o *operation) measure(v verdict, now time.Time) {
	if since := o.memory.PendingSince; !since.IsZero() && (v.Memory.PendingSince.IsZero() || v.Outcome != nil) {
		o.deps.metrics.waitedForCapacity(now.Sub(since))
	}
	if v.Follow != "" && o.fol == nil && !o.jobCreated.IsZero() {
		o.deps.metrics.podStarted(now.Sub(o.jobCreated))
	}
}
