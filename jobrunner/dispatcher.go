package jobrunner

import (
	"context"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Dispatcher is what the agent needs from the dispatch server; *client.Client (dispatch/client) implements
// it, and its refusals are api.StatusErrors. Every method retries transient failures itself or returns an error; the agent retries at its own level
// where losing the call would lose work (logs, results).
type Dispatcher interface {
	// Lease long-polls for one operation for up to wait; nil without error means none came.
	Lease(ctx context.Context, wait time.Duration) (*api.Lease, error)
	// Leases lists the operations leased to this worker (for re-adoption and the sweeper).
	Leases(ctx context.Context) ([]api.Lease, error)
	SetRunning(ctx context.Context, operationID, leaseID, message string) (api.Operation, error)
	AppendLogs(ctx context.Context, operationID, leaseID string, lines []api.LogLine) (api.AppendLogsResponse, error)
	Result(ctx context.Context, operationID string, req api.ResultRequest) (api.Operation, error)
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error)
}

// Updater upgrades the worker's own Helm release to a chart (chartgen/selfupdate implements it). The agent
// drains first (it stops leasing) and calls Update at once, while its operations' Jobs keep running; Update
// starts the upgrade and returns, and the upgrade replaces the worker's pod. The new worker re-adopts the Jobs.
type Updater interface {
	Update(ctx context.Context, version string, chart []byte) error
}

// permanent reports whether err is a refusal that retrying cannot change (the lease is gone, the request is
// invalid), as opposed to the server being unreachable or overloaded.
func permanent(err error) bool { return api.Permanent(err) }

// leaseGone reports that the server no longer considers the operation leased to this worker: it expired (the
// operation is lost) or was finished elsewhere. The worker stops the operation and forgets it.
func leaseGone(err error) bool { return api.IsLeaseLost(err) || api.IsNotLeased(err) }

// backOff waits *d before a retry, then doubles *d up to limit. It returns false, at once, when ctx ends.
func backOff(ctx context.Context, d *time.Duration, limit time.Duration) bool {
	select {
	case <-time.After(*d):
	case <-ctx.Done():
		return false
	}
	*d = min(*d*2, limit)
	return true
}
