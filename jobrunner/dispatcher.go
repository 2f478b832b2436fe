package jobrunner

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Dispatcher is what the agent needs from the dispatch server (dispatch/client implements it). Every method
// retries transient failures itself or returns an error; the agent retries at its own level where losing the
// call would lose work (logs, results).
type Dispatcher interface {
	// Lease long-polls for one operation for up to wait; nil without error means none came.
	Lease(ctx context.Context, wait time.Duration) (*api.Lease, error)
	// Leases lists the operations leased to this worker (for re-adoption and the sweeper).
	Leases(ctx context.Context) ([]api.Lease, error)
	Status(ctx context.Context, operationID string, req api.StatusRequest) error
	AppendLogs(ctx context.Context, operationID string, req api.AppendLogsRequest) (api.AppendLogsResponse, error)
	Result(ctx context.Context, operationID string, req api.ResultRequest) error
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error)
}

// Updater upgrades the worker's own Helm release to a chart (chartgen implements it). The agent drains first:
// it stops leasing and waits until its running operations have finished.
type Updater interface {
	Update(ctx context.Context, version string, chart []byte) error
}

// statusCoder is implemented by dispatch client errors that carry the server's HTTP status.
type statusCoder interface{ StatusCode() int }

// permanent reports whether err is a refusal that retrying cannot change (the lease is gone, the request is
// invalid), as opposed to the server being unreachable or overloaded.
func permanent(err error) bool {
	var sc statusCoder
	if !errors.As(err, &sc) {
		return false
	}
	c := sc.StatusCode()
	return c >= 400 && c < 500 && c != http.StatusRequestTimeout && c != http.StatusTooManyRequests
}
