package chart

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/e2e/proc"
)

// scrape sums the samples of name at url whose labels include want (a histogram's: its count).
func scrape(t *testing.T, url, name string, want map[string]string) (sum float64) {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s, %v", url, resp.Status, err)
	}
next:
	for _, m := range families[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
				continue next
			}
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	return sum
}

// TestMetricsAfterOperations: a worker installed with helm (scrape annotations on) runs three operations, then
// both /metrics agree with what happened: operations finished, lines shipped and stored (as many as the logs
// hold), the queue back to 0, pods started, Kubernetes requests made.
func TestMetricsAfterOperations(t *testing.T) {
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t)
	port := proc.FreePort(t)
	installWorker(t, ns, d, "metrics.scrapeAnnotations=true", fmt.Sprintf("worker.healthPort=%d", port))
	if a := runningWorkerPod(t, ns).Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(port) {
		t.Errorf("worker pod annotations: %v", a)
	}
	d.waitWorker(t, 3*time.Minute, "healthy", func(w api.Worker) bool { return w.Healthy })
	const n = 3
	lines := 0
	for i := range n {
		id := d.submit(t, fmt.Sprintf("metrics-%d", i), "echo one\necho two >&2")
		if op := d.waitOp(t, id, 3*time.Minute); op.State != api.StateSucceeded {
			t.Fatalf("operation %s: %s %s", id, op.State, op.Message)
		}
		if _, err := d.admin.Logs(context.Background(), id, client.LogsOptions{}, func(api.LogLine) error { lines++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	server, worker := d.url+"/metrics", fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	// The worker counts a result once the server took it.
	waitFor(t, time.Minute, "the worker to count its results", func() (bool, string) {
		done, running := scrape(t, worker, "octo_worker_operations_finished_total", map[string]string{"state": "succeeded"}), scrape(t, worker, "octo_worker_operations_running", nil)
		return done == n && running == 0, fmt.Sprintf("%v finished, %v running", done, running)
	})
	inPool, ok := map[string]string{"pool": pool}, map[string]string{"pool": pool, "state": "succeeded"}
	for _, c := range []struct {
		url, name string
		labels    map[string]string
		want      float64
	}{
		{server, "octo_dispatch_operations_finished_total", ok, n},
		{server, "octo_dispatch_lease_wait_seconds", inPool, n},
		{server, "octo_dispatch_operation_duration_seconds", ok, n},
		{server, "octo_dispatch_log_lines_stored_total", nil, float64(lines)},
		{server, "octo_dispatch_queue_depth", inPool, 0},
		{server, "octo_dispatch_workers", map[string]string{"state": "healthy"}, 1},
		{server, "octo_dispatch_http_requests_total", map[string]string{"route": "/api/v1/worker/operations/{id}/result", "code": "200"}, n},
		{worker, "octo_worker_log_lines_shipped_total", nil, float64(lines)},
		{worker, "octo_worker_shipper_backlog_lines", nil, 0},
		{worker, "octo_worker_pod_start_seconds", nil, n},
	} {
		if got := scrape(t, c.url, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := scrape(t, worker, "octo_worker_kube_requests_total", nil); got <= 0 {
		t.Errorf("octo_worker_kube_requests_total = %v, want > 0", got)
	}
	t.Logf("%d operations, %d log lines stored and shipped", n, lines)
}
