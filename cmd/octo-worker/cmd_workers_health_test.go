package main

import (
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// TestWorkersHealth: `workers list` shows each worker's state and its failing check (control characters
// escaped), `workers show` every check, and `workers check` runs a check on the worker (the test plays the
// worker), prints the pod's output and how long it took, and exits with the script's code.
func TestWorkersHealth(t *testing.T) {
	// Not parallel: see TestOneArgumentRequired.
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	ctx := t.Context()
	if _, err := srv.Admin.CreatePool(ctx, "web", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, srv.Admin, api.RegisterRequest{Name: "web-1", Pools: []string{"web"}, Version: "test", Capacity: 2})
	if _, err := w.Heartbeat(ctx, api.HeartbeatRequest{Version: "test", Capacity: 2, Health: api.Health{OK: false,
		Message: "1 check failed", CheckedAt: time.Now(), Checks: []api.Check{{Name: api.CheckKubernetesAPI, OK: true},
			{Name: api.CheckPermissions, Message: "cannot create jobs\x1b[2J: grant the Role that verb"}}}}); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--server", srv.URL, "--token", dispatchtest.AdminToken}
	run := func(sub string, args ...string) (string, string, error) {
		return cliRun(ctx, append(append([]string{"workers", sub}, conn...), args...)...)
	}

	out, _, err := run("list")
	if err != nil || !strings.Contains(out, "STATE") || !strings.Contains(out, "unhealthy") ||
		!strings.Contains(out, `permissions: cannot create jobs\x1b[2J: grant`) || strings.Contains(out, "\x1b") {
		t.Errorf("workers list:\n%s %v", out, err)
	}
	out, _, err = run("show", reg.WorkerID)
	if err != nil || !strings.Contains(out, "unhealthy") || !strings.Contains(out, "OK    kubernetes-api") ||
		!strings.Contains(out, "FAIL  permissions: cannot create jobs") || strings.Contains(out, "\x1b") || !strings.Contains(out, "Last check:") {
		t.Errorf("workers show:\n%s %v", out, err)
	}

	// The test plays the worker: it takes the check, runs it (its output, then exit code code).
	play := func(code int) {
		l, err := w.Lease(ctx, 30*time.Second)
		if err != nil || l == nil {
			t.Errorf("the worker's lease: %+v, %v", l, err)
			return
		}
		if !strings.Contains(l.Operation.Script, "uname -a") {
			t.Errorf("the check runs %q", l.Operation.Script)
		}
		if _, err := w.SetRunning(ctx, l.Operation.ID, l.LeaseID, ""); err != nil {
			t.Error(err)
		}
		lines := []api.LogLine{{Seq: 1, Stream: api.StreamStdout, Text: "octo-worker health check"}, {Seq: 2, Stream: api.StreamStdout, Text: "uid=1000"}}
		if _, err := w.AppendLogs(ctx, l.Operation.ID, l.LeaseID, lines); err != nil {
			t.Error(err)
		}
		state := api.StateSucceeded
		if code != 0 {
			state = api.StateFailed
		}
		if _, err := w.Result(ctx, l.Operation.ID, api.ResultRequest{LeaseID: l.LeaseID, State: state, ExitCode: &code, LastSeq: 2}); err != nil {
			t.Error(err)
		}
	}
	for _, code := range []int{0, 3} {
		done := make(chan struct{})
		go func() { defer close(done); play(code) }()
		out, errOut, err := run("check", reg.WorkerID)
		<-done
		if out != "octo-worker health check\nuid=1000\n" || !strings.Contains(errOut, "queued for worker "+reg.WorkerID) ||
			!strings.Contains(errOut, "queued until its pod ran") || (code == 0) != (err == nil) || code != 0 && exitCode(err) != code {
			t.Errorf("workers check (exit %d):\nstdout %q\nstderr %q\nerr %v", code, out, errOut, err)
		}
	}
	if _, err := srv.Admin.DrainWorker(ctx, reg.WorkerID, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run("check", reg.WorkerID); err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("workers check of a draining worker: %v", err)
	}
}
