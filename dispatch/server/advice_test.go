package server

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// TestRequestsAdvice: usage reported with results reaches the advice of its pool and step; a forged usage is
// refused naming the field; the query is checked.
func TestRequestsAdvice(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("web")
	token, _ := b.register("worker-1", []string{"web"})
	w := b.client(token)
	finish := func(name string, peakMi int64) {
		t.Helper()
		op := b.submit(api.OperationSpec{Name: name, Pool: "web"})
		l := b.lease(w)
		if _, err := w.SetRunning(b.ctx, op.ID, l.LeaseID, ""); err != nil {
			t.Fatal(err)
		}
		u := &api.Usage{PeakMemoryBytes: peakMi << 20, CPUSeconds: 0.001, Source: api.UsageCgroup}
		done, err := w.Result(b.ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: intp(0), Usage: u})
		if err != nil || done.Usage == nil || *done.Usage != *u {
			t.Fatalf("Result with usage = %+v, %v", done, err)
		}
	}
	for i := range 5 {
		finish("build", int64(100*(i+1))) // 100..500 Mi: p90 500Mi, +20% = 600Mi
	}
	finish("test", 50)

	a, err := b.admin.RequestsAdvice(b.ctx, "web", "build")
	if err != nil || a.Samples != 5 || a.Requests.Memory != "600Mi" || a.Requests.CPU == "" {
		t.Fatalf("advice for step build = %+v, %v; want 5 samples and 600Mi", a, err)
	}
	if a, err := b.admin.RequestsAdvice(b.ctx, "web", ""); err != nil || a.Samples != 6 {
		t.Errorf("advice for pool web = %+v, %v; want 6 samples", a, err)
	}
	if a, err := b.admin.RequestsAdvice(b.ctx, "web", "test"); err != nil || a.Samples != 1 || a.Requests != (api.Resources{}) {
		t.Errorf("advice from 1 sample = %+v, %v; want none", a, err)
	}

	// A usage no runner measures is refused, naming the field.
	op := b.submit(api.OperationSpec{Pool: "web"})
	l := b.lease(w)
	body := fmt.Appendf(nil, `{"lease_id":%q,"state":"succeeded","exit_code":0,"usage":{"peak_memory_bytes":-5,"cpu_seconds":1,"source":"cgroup"}}`, l.LeaseID)
	if code, e := b.raw("POST", "/api/v1/worker/operations/"+op.ID+"/result", token, body); code != http.StatusUnprocessableEntity || e.Field != "usage.peak_memory_bytes" {
		t.Errorf("forged usage: %d %+v; want 422 naming usage.peak_memory_bytes", code, e)
	}

	for _, tt := range []struct {
		query string
		code  int
		field string
	}{
		{"?pool=nope", http.StatusNotFound, ""},
		{"", http.StatusUnprocessableEntity, "pool"},
		{"?pool=web&step=%1b%5b2J", http.StatusUnprocessableEntity, "step"},
	} {
		if code, e := b.raw("GET", "/api/v1/requests/advice"+tt.query, adminToken, nil); code != tt.code || e.Field != tt.field {
			t.Errorf("advice%s: %d %+v; want %d naming %q", tt.query, code, e, tt.code, tt.field)
		}
	}
}
