package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// The rules below are what every driver would otherwise write again word for word: how a deployment's state
// follows from its steps, what a lease reference must match, which results are valid, and the messages a user
// reads on operations the store ended. A driver keeps the data; these functions decide.

// Messages the store writes on operations it ends or holds back.
const (
	// MessageCancelledBeforeStart is the message of a queued operation cancelled before a worker leased it.
	MessageCancelledBeforeStart = "cancelled before it started"
	// MessageDeploymentCancelled is the message of a deployment's queued steps when the deployment is cancelled.
	MessageDeploymentCancelled = "not run: deployment cancelled"
	// MessageCancelRequested is appended to the message of a lost operation whose cancel had been requested.
	MessageCancelRequested = " (a cancel had been requested)"
)

// MessageWaitsFor is the message of a deployment step (numbered from 1) that waits for the step before it.
func MessageWaitsFor(step int) string {
	return fmt.Sprintf("waits for step %d", step-1)
}

// MessageNotRun is the message of a deployment's queued steps after a step that ended in state (anything but
// succeeded): they are cancelled and will not run.
func MessageNotRun(step int, name string, state api.State) string {
	label := fmt.Sprintf("step %d", step)
	if name != "" {
		label += fmt.Sprintf(" (%s)", name)
	}
	return fmt.Sprintf("not run: %s ended %s", label, state)
}

// MessageExpired is the message of an operation whose lease of workerID expired at expiredAt: it is lost.
func MessageExpired(workerID string, expiredAt time.Time, cancelRequested bool) string {
	msg := fmt.Sprintf("lost: the lease of worker %s expired at %s without a heartbeat; not run again",
		workerID, expiredAt.Format(time.RFC3339))
	if cancelRequested {
		msg += MessageCancelRequested
	}
	return msg
}

// MessageWorkerRemoved is the message of an operation its worker held when it was removed: it is lost. A
// driver that ends several at once in one statement appends MessageCancelRequested itself where a cancel had
// been requested.
func MessageWorkerRemoved(name, id string) string {
	return fmt.Sprintf("lost: worker %s (%s) was removed while it held this operation; its result is unknown and it is not run again",
		name, id)
}

// MessageTargetRemoved is the message of a queued operation targeted at a worker (a health check) that was
// removed before it claimed it: it is cancelled.
func MessageTargetRemoved(name, id string) string {
	return fmt.Sprintf("not run: worker %s (%s), the only worker that could run it, was removed", name, id)
}

// DeploymentState is a deployment's state from the number of its steps in each state: running while a step
// is leased or running, succeeded when every step succeeded, failed when a step failed, timed out or was
// lost, cancelled when one was cancelled, running between two steps, and queued before the first.
func DeploymentState(steps map[api.State]int) api.State {
	total := 0
	for _, n := range steps {
		total += n
	}
	switch {
	case steps[api.StateLeased]+steps[api.StateRunning] > 0:
		return api.StateRunning
	case steps[api.StateSucceeded] == total:
		return api.StateSucceeded
	case steps[api.StateFailed]+steps[api.StateTimedOut]+steps[api.StateLost] > 0:
		return api.StateFailed
	case steps[api.StateCancelled] > 0:
		return api.StateCancelled
	case steps[api.StateSucceeded] > 0:
		return api.StateRunning
	default:
		return api.StateQueued
	}
}

// CheckResult refuses (ErrInvalid) a result a worker may not report: succeeded needs exit code 0, and only
// succeeded, failed, cancelled and timed-out end an operation this way.
func CheckResult(operationID string, r Result) error {
	switch r.State {
	case api.StateSucceeded:
		if r.ExitCode == nil || *r.ExitCode != 0 {
			return fmt.Errorf("finishing operation %s: state succeeded needs exit code 0: %w", operationID, ErrInvalid)
		}
	case api.StateFailed, api.StateCancelled, api.StateTimedOut:
	default:
		return fmt.Errorf("finishing operation %s: a result's state must be succeeded, failed, cancelled or timed-out, not %q: %w",
			operationID, r.State, ErrInvalid)
	}
	return nil
}

// Held is what a driver reads of an operation to check a LeaseRef against it.
type Held struct {
	ID             string
	State          api.State
	WorkerID       string
	LeaseID        string
	LeaseExpiresAt time.Time
}

// CheckLease says whether ref names the live lease on h: ErrNotLeased when it names another lease (or none),
// a *LeaseLostError when the operation ended or the lease expired before ref.Now, nil when it is live.
func CheckLease(h Held, ref LeaseRef) error {
	if h.WorkerID != ref.WorkerID || h.LeaseID != ref.LeaseID || h.LeaseID == "" {
		return fmt.Errorf("operation %s: %w", ref.OperationID, ErrNotLeased)
	}
	if h.State.Terminal() {
		return &LeaseLostError{OperationID: h.ID, State: h.State, Expired: h.State == api.StateLost}
	}
	if h.LeaseExpiresAt.Before(ref.Now) {
		return &LeaseLostError{OperationID: h.ID, State: h.State, Expired: true}
	}
	return nil
}

// IsReplay says whether a result repeats how an operation already ended (same state, same exit code), with
// lease error err from CheckLease: a worker retrying its result is answered as if it were the first time.
func IsReplay(err error, state api.State, exitCode *int, r Result) bool {
	var lost *LeaseLostError
	return errors.As(err, &lost) && !lost.Expired && state == r.State && sameExit(exitCode, r.ExitCode)
}

func sameExit(a, b *int) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// Matches says whether a worker of pools with capabilities caps can take an operation of pool that needs
// required: the pool is one of its pools and it has every required capability. Claim and the hand-off to a
// waiting worker lease by this rule.
func Matches(pools, caps []string, pool string, required []string) bool {
	if !contains(pools, pool) {
		return false
	}
	for _, c := range required {
		if !contains(caps, c) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// SilentHeartbeats is how many heartbeat intervals a worker may stay silent before it is unavailable.
const SilentHeartbeats = 3

// HeartbeatSince is the oldest last heartbeat of a worker still available at now, when workers heartbeat
// every interval: a claim leases only to a worker that heartbeated since (ClaimParams.HeartbeatSince).
func HeartbeatSince(now time.Time, interval time.Duration) time.Time {
	return now.Add(-SilentHeartbeats * interval)
}

// WorkerState is what the server makes of worker w at now: unavailable when it has not heartbeated within
// SilentHeartbeats intervals; else unhealthy when its own report is not OK (a check failed); else outdated
// when a desired version is set and it runs another; else healthy. Claim and the hand-off lease only to a
// worker that is healthy or outdated (and not asked to drain, and with a free slot), by the same rule in SQL.
func WorkerState(w api.Worker, now time.Time, interval time.Duration, desiredVersion string) api.WorkerState {
	switch {
	case w.LastHeartbeat.Before(HeartbeatSince(now, interval)):
		return api.WorkerUnavailable
	case !w.Healthy:
		return api.WorkerUnhealthy
	case desiredVersion != "" && w.Version != desiredVersion:
		return api.WorkerOutdated
	default:
		return api.WorkerHealthy
	}
}

// Offer is what a worker offers, for matching an operation to it: its pools, capabilities and pod profiles.
type Offer struct{ Pools, Capabilities, Profiles []string }

// Takes says whether a worker offering o can take an operation of pool needing caps and naming profile (""
// for none). A claim keeps the same rule in its statement.
func (o Offer) Takes(pool string, caps []string, profile string) bool {
	return Matches(o.Pools, o.Capabilities, pool, caps) && (profile == "" || contains(o.Profiles, profile))
}
