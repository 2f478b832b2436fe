package store

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

func TestDeploymentState(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		steps map[api.State]int
		want  api.State
	}{
		{map[api.State]int{api.StateQueued: 3}, api.StateQueued},
		{map[api.State]int{api.StateLeased: 1, api.StateQueued: 2}, api.StateRunning},
		{map[api.State]int{api.StateSucceeded: 1, api.StateRunning: 1, api.StateQueued: 1}, api.StateRunning},
		{map[api.State]int{api.StateSucceeded: 1, api.StateQueued: 2}, api.StateRunning}, // between two steps
		{map[api.State]int{api.StateSucceeded: 3}, api.StateSucceeded},
		{map[api.State]int{api.StateSucceeded: 1, api.StateFailed: 1, api.StateCancelled: 1}, api.StateFailed},
		{map[api.State]int{api.StateTimedOut: 1, api.StateCancelled: 2}, api.StateFailed},
		{map[api.State]int{api.StateLost: 1, api.StateCancelled: 2}, api.StateFailed},
		{map[api.State]int{api.StateSucceeded: 1, api.StateCancelled: 2}, api.StateCancelled},
		{map[api.State]int{api.StateCancelled: 2}, api.StateCancelled},
		// A live step outranks an ended one: the deployment ends when its last live step does.
		{map[api.State]int{api.StateRunning: 1, api.StateFailed: 1, api.StateCancelled: 1}, api.StateRunning},
	} {
		if got := DeploymentState(tc.steps); got != tc.want {
			t.Errorf("DeploymentState(%v) = %s, want %s", tc.steps, got, tc.want)
		}
	}
}

func TestMessages(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct{ got, want string }{
		{MessageWaitsFor(2), "waits for step 1"},
		{MessageNotRun(3, "smoke", api.StateFailed), "not run: step 3 (smoke) ended failed"},
		{MessageNotRun(2, "", api.StateLost), "not run: step 2 ended lost"},
		{MessageExpired("w1", at, false), "lost: the lease of worker w1 expired at 2026-01-02T03:04:05Z without a heartbeat; not run again"},
		{MessageExpired("w1", at, true), "lost: the lease of worker w1 expired at 2026-01-02T03:04:05Z without a heartbeat; not run again (a cancel had been requested)"},
		{MessageWorkerRemoved("w", "w-1"), "lost: worker w (w-1) was removed while it held this operation; its result is unknown and it is not run again"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestCheckResult(t *testing.T) {
	t.Parallel()
	zero, one := 0, 1
	for _, tc := range []struct {
		r     Result
		valid bool
	}{
		{Result{State: api.StateSucceeded, ExitCode: &zero}, true},
		{Result{State: api.StateSucceeded, ExitCode: &one}, false},
		{Result{State: api.StateSucceeded}, false},
		{Result{State: api.StateFailed, ExitCode: &one}, true},
		{Result{State: api.StateFailed}, true},
		{Result{State: api.StateCancelled}, true},
		{Result{State: api.StateTimedOut}, true},
		{Result{State: api.StateLost}, false},
		{Result{State: api.StateRunning}, false},
		{Result{State: "nonsense"}, false},
	} {
		err := CheckResult("op", tc.r)
		if tc.valid && err != nil || !tc.valid && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckResult(%+v) = %v, want valid %v", tc.r, err, tc.valid)
		}
	}
}

func TestCheckLease(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	live := Held{ID: "op", State: api.StateRunning, WorkerID: "w", LeaseID: "l", LeaseExpiresAt: now.Add(time.Minute)}
	ref := LeaseRef{OperationID: "op", LeaseID: "l", WorkerID: "w", Now: now}
	with := func(f func(*Held)) Held { h := live; f(&h); return h }
	for _, tc := range []struct {
		name    string
		h       Held
		ref     LeaseRef
		want    error // nil, ErrNotLeased or ErrLeaseLost
		expired bool
	}{
		{"live", live, ref, nil, false},
		{"expires exactly now", with(func(h *Held) { h.LeaseExpiresAt = now }), ref, nil, false},
		{"other worker", live, LeaseRef{OperationID: "op", LeaseID: "l", WorkerID: "x", Now: now}, ErrNotLeased, false},
		{"other lease", live, LeaseRef{OperationID: "op", LeaseID: "m", WorkerID: "w", Now: now}, ErrNotLeased, false},
		{"never leased", with(func(h *Held) { h.LeaseID, h.State = "", api.StateQueued }), LeaseRef{OperationID: "op", WorkerID: "w", Now: now}, ErrNotLeased, false},
		{"finished", with(func(h *Held) { h.State = api.StateSucceeded }), ref, ErrLeaseLost, false},
		{"lost", with(func(h *Held) { h.State = api.StateLost }), ref, ErrLeaseLost, true},
		{"expired", with(func(h *Held) { h.LeaseExpiresAt = now.Add(-time.Nanosecond) }), ref, ErrLeaseLost, true},
	} {
		err := CheckLease(tc.h, tc.ref)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: CheckLease = %v, want %v", tc.name, err, tc.want)
		}
		var lost *LeaseLostError
		if errors.As(err, &lost) && lost.Expired != tc.expired {
			t.Errorf("%s: Expired = %v, want %v", tc.name, lost.Expired, tc.expired)
		}
	}
}

func TestIsReplay(t *testing.T) {
	t.Parallel()
	zero, one := 0, 1
	ended := &LeaseLostError{OperationID: "op", State: api.StateFailed}
	for _, tc := range []struct {
		name  string
		err   error
		state api.State
		exit  *int
		r     Result
		want  bool
	}{
		{"same end", ended, api.StateFailed, &one, Result{State: api.StateFailed, ExitCode: &one}, true},
		{"same end, wrapped", fmt.Errorf("x: %w", ended), api.StateFailed, &one, Result{State: api.StateFailed, ExitCode: &one}, true},
		{"same end, no exit code", ended, api.StateCancelled, nil, Result{State: api.StateCancelled}, true},
		{"other exit code", ended, api.StateFailed, &one, Result{State: api.StateFailed, ExitCode: &zero}, false},
		{"exit code now missing", ended, api.StateFailed, &one, Result{State: api.StateFailed}, false},
		{"other state", ended, api.StateFailed, &one, Result{State: api.StateTimedOut, ExitCode: &one}, false},
		{"lost", &LeaseLostError{OperationID: "op", State: api.StateLost, Expired: true}, api.StateLost, nil, Result{State: api.StateLost}, false},
		{"live lease", nil, api.StateRunning, nil, Result{State: api.StateRunning}, false},
		{"not leased", ErrNotLeased, api.StateFailed, &one, Result{State: api.StateFailed, ExitCode: &one}, false},
	} {
		if got := IsReplay(tc.err, tc.state, tc.exit, tc.r); got != tc.want {
			t.Errorf("%s: IsReplay = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pools, caps []string
		pool        string
		required    []string
		want        bool
	}{
		{[]string{"a", "b"}, nil, "b", nil, true},
		{[]string{"a"}, nil, "b", nil, false},
		{nil, []string{"docker"}, "a", nil, false},
		{[]string{"a"}, []string{"docker", "gpu"}, "a", []string{"gpu"}, true},
		{[]string{"a"}, []string{"docker"}, "a", []string{"docker", "gpu"}, false},
		{[]string{"a"}, nil, "a", []string{"docker"}, false},
	} {
		if got := Matches(tc.pools, tc.caps, tc.pool, tc.required); got != tc.want {
			t.Errorf("Matches(%v, %v, %q, %v) = %v, want %v", tc.pools, tc.caps, tc.pool, tc.required, got, tc.want)
		}
	}
}

func TestWorkerState(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	const interval = 5 * time.Second
	tests := []struct {
		name      string
		heartbeat time.Time
		healthy   bool
		version   string
		desired   string
		want      api.WorkerState
	}{
		{"healthy", now, true, "1.0", "", api.WorkerHealthy},
		{"healthy at the desired version", now, true, "1.0", "1.0", api.WorkerHealthy},
		{"outdated", now, true, "1.0", "1.1", api.WorkerOutdated},
		{"unhealthy before outdated", now, false, "1.0", "1.1", api.WorkerUnhealthy},
		{"silent for exactly three intervals", now.Add(-3 * interval), true, "1.0", "", api.WorkerHealthy},
		{"unavailable after three intervals", now.Add(-3*interval - time.Nanosecond), true, "1.0", "", api.WorkerUnavailable},
		{"unavailable before unhealthy", now.Add(-time.Hour), false, "1.0", "1.1", api.WorkerUnavailable},
	}
	for _, tt := range tests {
		w := api.Worker{LastHeartbeat: tt.heartbeat, Healthy: tt.healthy, Version: tt.version}
		if got := WorkerState(w, now, interval, tt.desired); got != tt.want {
			t.Errorf("%s: WorkerState = %s, want %s", tt.name, got, tt.want)
		}
	}
}
