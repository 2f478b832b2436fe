package server

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// metrics are the server's Prometheus metrics (`octo_dispatch_*`, see the README), in a registry per Server.
// Counters and histograms change where the event happens; storeCollector reads queues and workers when scraped.
type metrics struct {
	reg       *prometheus.Registry
	finished  *prometheus.CounterVec   // pool, state
	leaseWait *prometheus.HistogramVec // pool
	duration  *prometheus.HistogramVec // pool, state
	logLines  prometheus.Counter
	logBytes  prometheus.Counter
	requests  *prometheus.CounterVec // route, method, code
	serve     http.Handler           // the registry in the text format (or what the scraper negotiates)
}

// scrapeTimeout bounds the store reads of one scrape.
const scrapeTimeout = 5 * time.Second

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "octo_dispatch_operations_finished_total",
			Help: "Operations that reached a terminal state."},
			[]string{"pool", "state"}),
		leaseWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "octo_dispatch_lease_wait_seconds",
			Help: "Submit to lease (not a deployment's later steps).", Buckets: prometheus.ExponentialBuckets(0.01, 3, 12)}, []string{"pool"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "octo_dispatch_operation_duration_seconds",
			Help: "Running (Job created) to end.", Buckets: prometheus.ExponentialBuckets(1, 2.5, 12)}, []string{"pool", "state"}),
		logLines: prometheus.NewCounter(prometheus.CounterOpts{Name: "octo_dispatch_log_lines_stored_total",
			Help: "Log lines stored (a repeat once)."}),
		logBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "octo_dispatch_log_bytes_stored_total",
			Help: "Bytes of log text stored."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "octo_dispatch_http_requests_total",
			Help: "HTTP requests by route pattern, method and code."},
			[]string{"route", "method", "code"}),
	}
	m.reg.MustRegister(m.finished, m.leaseWait, m.duration, m.logLines, m.logBytes, m.requests, &storeCollector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// A metric the store could not give is logged and left out.
	m.serve = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: s.log.WithField("what", "metrics"),
		ErrorHandling: promhttp.ContinueOnError})
	return m
}

// instrument counts the requests h answers under route.
func (m *metrics) instrument(route string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"route": route}), h)
}

// leased records a lease handed out; not a deployment's later step: nothing dates when it became claimable.
func (m *metrics) leased(l *api.Lease, now time.Time) {
	if l.Operation.Step <= 1 {
		m.leaseWait.WithLabelValues(l.Operation.Pool).Observe(max(now.Sub(l.Operation.CreatedAt), 0).Seconds())
	}
}

// ended records an operation that reached a terminal state.
func (m *metrics) ended(op api.Operation) {
	m.finished.WithLabelValues(op.Pool, string(op.State)).Inc()
	if op.StartedAt != nil && op.FinishedAt != nil {
		m.duration.WithLabelValues(op.Pool, string(op.State)).Observe(max(op.FinishedAt.Sub(*op.StartedAt), 0).Seconds())
	}
}

// countEnded records the operations a state change ended (one read by primary key each); a failed read is
// logged: metrics never fail the request that ended the operation.
func (s *Server) countEnded(ids []string) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	for _, id := range ids {
		op, err := s.st.OperationSummary(ctx, id)
		if err != nil {
			s.log.WithError(err).WithField("operation", id).Warn("reading an ended operation for the metrics")
			continue
		}
		s.metrics.ended(op)
	}
}

// storeCollector reads at each scrape every pool's queue (store.QueueStats) and every worker's state and
// heartbeat age: its cost follows pools, workers and the queue, never history; scrapeTimeout bounds it.
type storeCollector struct{ s *Server }

var (
	descQueueDepth   = prometheus.NewDesc("octo_dispatch_queue_depth", "Operations queued and claimable.", []string{"pool"}, nil)
	descQueueAge     = prometheus.NewDesc("octo_dispatch_queue_oldest_age_seconds", "Wait so far of the first in line.", []string{"pool"}, nil)
	descWorkers      = prometheus.NewDesc("octo_dispatch_workers", "Workers by state.", []string{"state"}, nil)
	descHeartbeatAge = prometheus.NewDesc("octo_dispatch_worker_heartbeat_age_seconds", "Time since the last heartbeat.", []string{"worker", "name"}, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descQueueDepth
	ch <- descQueueAge
	ch <- descWorkers
	ch <- descHeartbeatAge
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	now := time.Now()
	queues, err := c.s.st.QueueStats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descQueueDepth, err)
	}
	for _, q := range queues {
		ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(q.Depth), q.Pool)
		age := 0.0
		if q.Depth > 0 {
			age = max(now.Sub(q.FirstSince), 0).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descQueueAge, prometheus.GaugeValue, age, q.Pool)
	}
	workers, err := c.s.st.ListWorkers(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descWorkers, err)
		return
	}
	dv, err := c.s.desiredVersion(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descWorkers, err)
		return
	}
	byState := map[api.WorkerState]int{api.WorkerHealthy: 0, api.WorkerUnhealthy: 0, api.WorkerUnavailable: 0, api.WorkerOutdated: 0}
	for _, w := range workers {
		byState[store.WorkerState(w.Worker, now, c.s.cfg.HeartbeatInterval, dv.Version)]++
		ch <- prometheus.MustNewConstMetric(descHeartbeatAge, prometheus.GaugeValue, max(now.Sub(w.LastHeartbeat), 0).Seconds(), w.ID, w.Name)
	}
	for st, n := range byState {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), string(st))
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, _ caller) error {
	s.metrics.serve.ServeHTTP(w, r)
	return nil
}
