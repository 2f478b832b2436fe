package main

import (
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// TestRequestsAdvise: the advice prints the numbers behind it and a helm command whose --set values the chart
// accepts and which set the advised requests; with --step, the step's own requests instead.
func TestRequestsAdvise(t *testing.T) {
	// Not parallel: see TestOneArgumentRequired.
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	ctx := t.Context()
	if _, err := srv.Admin.CreatePool(ctx, "web", ""); err != nil {
		t.Fatal(err)
	}
	w, _ := dispatchtest.Register(t, srv.Admin, api.RegisterRequest{Name: "web-1", Pools: []string{"web"}, Version: "test", Capacity: 2})
	for i := range 5 {
		op, err := srv.Admin.Submit(ctx, api.OperationSpec{Name: "build", Pool: "web", Script: "make"})
		if err != nil {
			t.Fatal(err)
		}
		l, err := w.Lease(ctx, 0)
		if err != nil || l == nil {
			t.Fatalf("Lease = %+v, %v", l, err)
		}
		if _, err := w.SetRunning(ctx, op.ID, l.LeaseID, ""); err != nil {
			t.Fatal(err)
		}
		u := &api.Usage{PeakMemoryBytes: int64(i+1) * 100 << 20, CPUSeconds: 1e-6, Source: api.UsageCgroup}
		if _, err := w.Result(ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateSucceeded, ExitCode: new(int), Usage: u}); err != nil {
			t.Fatal(err)
		}
	}
	conn := []string{"--server", srv.URL, "--token", dispatchtest.AdminToken}
	out, _, err := cliRun(ctx, append([]string{"requests", "advise", "--pool", "web", "--release", "ci workers", "-n", "tools"}, conn...)...)
	if err != nil {
		t.Fatalf("requests advise: %v\n%s", err, out)
	}
	for _, want := range []string{"5 ended operations", "p90 500Mi", "max 500Mi", "memory=600Mi",
		"helm upgrade 'ci workers' ./octo-worker-test.tgz --namespace tools --reuse-values --set scriptPods.resources.requests.cpu="} {
		if !strings.Contains(out, want) {
			t.Errorf("requests advise printed:\n%s\nwant it to contain %q", out, want)
		}
	}
	// The printed --set values are values the chart accepts over a release's (--reuse-values), and they set
	// the advice.
	i := strings.Index(out, "helm upgrade")
	if i < 0 {
		t.Fatal("no helm command printed")
	}
	var sets []string
	fields := strings.Fields(out[i:])
	for i, f := range fields {
		if f == "--set" {
			sets = append(sets, fields[i+1])
		}
	}
	release := []string{"worker.pools={web}", "worker.serverUrl=https://deploy.example.com", "worker.registrationToken=t"}
	loaded, err := chartgen.Input{Set: append(release, sets...)}.Check()
	if err != nil {
		t.Fatalf("chartgen refuses the printed --set %v: %v", sets, err)
	}
	if got := loaded.Values.ScriptPods.Resources.Requests; got.Memory != "600Mi" || got.CPU == "" {
		t.Errorf("the printed command sets requests %+v, want memory 600Mi", got)
	}

	if !strings.Contains(out, "Apply:") || strings.Contains(out, "maxRequests") {
		t.Errorf("advice within the default maxRequests warns of them:\n%s", out)
	}
	if got := aboveDefaultMax(api.Resources{CPU: "2500m", Memory: "1Gi"}); len(got) != 1 || got[0] != "cpu 2" {
		t.Errorf("aboveDefaultMax(2500m, 1Gi) = %v, want [cpu 2]", got)
	}

	out, _, err = cliRun(ctx, append([]string{"requests", "advise", "--pool", "web", "--step", "build"}, conn...)...)
	if err != nil || !strings.Contains(out, "operations named build") || !strings.Contains(out, "requests: {cpu: ") || strings.Contains(out, "helm upgrade") {
		t.Errorf("requests advise --step build: %v\n%s", err, out)
	}
	out, _, err = cliRun(ctx, append([]string{"requests", "advise", "--pool", "web", "--step", "deploy"}, conn...)...)
	if err != nil || !strings.Contains(out, "none yet: 0 ended operations") {
		t.Errorf("requests advise for a step with no samples: %v\n%s", err, out)
	}
}
