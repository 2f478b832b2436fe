package server

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// scraped returns the value of the sample of name whose labels include want, read from GET /metrics with no
// token (a scraper has none; the labels carry no secret) in the text format.
func (b *bundle) scraped(name string, want map[string]string) float64 {
	b.t.Helper()
	resp, err := http.Get(b.url + "/metrics")
	if err != nil || resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET /metrics without a token: %v %v", resp, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.t.Fatalf("parsing /metrics: %v", err)
	}
next:
	for _, m := range families[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
				continue next
			}
		}
		return m.GetGauge().GetValue()
	}
	b.t.Fatalf("no %s%v at /metrics", name, want)
	return 0
}

// TestMetrics follows two operations through the server and reads each metric where it changes (the store's
// gauges through GET /metrics); requests are counted by route pattern, never by raw path.
func TestMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	m := b.srv.metrics
	b.pool("web")
	b.pool("idle")
	w, wid := b.worker("worker-1", []string{"web"})
	queue := func(what string, depth float64, aged bool) {
		t.Helper()
		d, a := b.scraped("octo_dispatch_queue_depth", map[string]string{"pool": "web"}), b.scraped("octo_dispatch_queue_oldest_age_seconds", map[string]string{"pool": "web"})
		if d != depth || (a > 0) != aged {
			t.Errorf("%s: queue depth %v, age %v; want %v, aged %v", what, d, a, depth, aged)
		}
	}
	queue("nothing queued", 0, false)
	if d := b.scraped("octo_dispatch_queue_depth", map[string]string{"pool": "idle"}); d != 0 {
		t.Errorf("empty pool: depth %v", d)
	}
	if n := b.scraped("octo_dispatch_workers", map[string]string{"state": "healthy"}); n != 1 {
		t.Errorf("healthy workers: %v, want 1", n)
	}
	b.scraped("octo_dispatch_worker_heartbeat_age_seconds", map[string]string{"worker": wid, "name": "worker-1"})

	op := b.submit(api.OperationSpec{Pool: "web"})
	queued := b.submit(api.OperationSpec{Pool: "web"})
	queue("two queued", 2, true)
	l := b.lease(w)
	queue("one leased", 1, true)
	if n := testutil.CollectAndCount(m.leaseWait); n != 1 {
		t.Errorf("lease wait series: %v, want 1", n)
	}
	if _, err := w.SetRunning(b.ctx, op.ID, l.LeaseID, "job created"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a retried batch is stored once
		if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, "hi"), line(2, "there")}); err != nil {
			t.Fatal(err)
		}
	}
	if n, size := testutil.ToFloat64(m.logLines), testutil.ToFloat64(m.logBytes); n != 2 || size != 7 {
		t.Errorf("log stored: %v lines, %v bytes; want 2 and 7", n, size)
	}
	if _, err := w.Result(b.ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0), LastSeq: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.Cancel(b.ctx, queued.ID); err != nil {
		t.Fatal(err)
	}
	for state, want := range map[api.State]float64{api.StateSucceeded: 1, api.StateCancelled: 1, api.StateFailed: 0} {
		if got := testutil.ToFloat64(m.finished.WithLabelValues("web", string(state))); got != want {
			t.Errorf("operations finished %s: %v, want %v", state, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("run time series: %v, want 1 (succeeded; the cancelled one never ran)", n)
	}
	queue("drained", 0, false)

	if status, _ := b.raw("GET", "/api/v1/no/such/"+op.ID, "", nil); status != http.StatusNotFound {
		t.Fatalf("unknown path: %d", status)
	}
	for _, c := range [][3]string{{"/api/v1/worker/operations/{id}/result", "post", "200"}, {"/api/v1/operations/{id}/cancel", "post", "200"}, {"unmatched", "get", "404"}} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(c[0], c[1], c[2])); got != 1 {
			t.Errorf("requests %v: %v, want 1", c, got)
		}
	}
	if n := testutil.CollectAndCount(m.requests); n > 20 {
		t.Errorf("%d request series: raw paths in the route label?", n)
	}
}
