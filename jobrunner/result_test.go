package jobrunner

import (
	"context"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
)

// The agent's "operation finished" line names an exit code only when the operation has one: a cancel before
// the script ended, or a result nobody knows, has none, and exit_code=0 would say it succeeded. Each case
// reports a real result to a real dispatch server.
func TestFinishLogsTheExitCodeOnlyWhenThereIsOne(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin := dispatchtest.Start(t, dispatchtest.Options{}).Admin
	if _, err := admin.CreatePool(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	w, reg := dispatchtest.Register(t, admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "0.1.0", Capacity: 5})
	cases := []struct {
		name string
		out  outcome
		want any // the exit_code field; nil: none
	}{
		{"succeeded", outcome{State: api.StateSucceeded, ExitCode: ptr(0), Message: "the script exited with code 0"}, 0},
		{"failed with a code", outcome{State: api.StateFailed, ExitCode: ptr(3), Message: "the script exited with code 3"}, 3},
		{"cancelled before the end", outcome{State: api.StateCancelled, Message: "cancelled"}, nil},
		{"cancelled, its end read", outcome{State: api.StateCancelled, ExitCode: ptr(143), Message: "cancelled"}, 143},
		{"result unknown", outcome{State: api.StateFailed, Message: "its result is unknown"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Not parallel: each case leases the operation it submits.
			if _, err := admin.Submit(ctx, api.OperationSpec{Pool: "p", Syntax: "sh", Script: "true"}); err != nil {
				t.Fatal(err)
			}
			lease, err := w.Lease(ctx, 0)
			if err != nil || lease == nil {
				t.Fatalf("Lease = %v, %v", lease, err)
			}
			log, hook := logtest.NewNullLogger()
			op := newOperation(operationDeps{d: w, log: log.WithField("worker", reg.WorkerID)}, *lease, false)
			op.ship = newShipper(w, op.id, lease.LeaseID, lease.LastSeq, op.log)
			shipCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); op.ship.Run(shipCtx) }()
			defer func() { stop(); <-done }()

			out := c.out
			op.finish(ctx, &out)
			if got, err := admin.Operation(ctx, lease.Operation.ID); err != nil || got.State != c.out.State {
				t.Fatalf("the server holds %+v (%v), want state %s", got, err, c.out.State)
			}
			var finished *logrus.Entry
			for _, e := range hook.AllEntries() {
				if e.Message == "operation finished" {
					finished = e
				}
			}
			if finished == nil {
				t.Fatalf("no \"operation finished\" line among %d", len(hook.AllEntries()))
			}
			got, ok := finished.Data["exit_code"]
			switch {
			case c.want == nil && ok:
				t.Errorf("exit_code=%v logged for an operation without an exit code", got)
			case c.want != nil && got != c.want:
				t.Errorf("exit_code = %v (logged: %v), want %v", got, ok, c.want)
			}
		})
	}
}
