package store

import (
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// OpRow is an operation row as both drivers read it (OpCols): api.Operation with the columns it does not show.
type OpRow struct {
	api.Operation
	Seq            int64
	LeaseID        string
	LeaseExpiresAt time.Time
	LastSeq        int64
	JSON           OpJSON
}

// OpCols are the columns ScanOp reads, in both drivers' SQL.
const OpCols = `seq, id, COALESCE(deployment_id, ''), step, name, pool, syntax, image, requests, timeout_seconds,
	capabilities, state, exit_code, message, COALESCE(worker_id, ''), cancel_requested, COALESCE(lease_id, ''),
	lease_expires_at, last_seq, created_at, started_at, finished_at, usage, COALESCE(profile, ''), overrides`

// Row is a row to scan: database/sql's and pgx's rows both are.
type Row interface{ Scan(dest ...any) error }

// ScanOp reads OpCols, followed by body and secrets when full is set. Times are nanoseconds since the epoch
// in both drivers; cancel_requested is an integer 0 or 1 in SQLite and a boolean in PostgreSQL, which both
// scan into a bool.
func ScanOp(row Row, full bool) (OpRow, error) { return ScanOpOpening(row, full, nil) }

// ScanOpOpening is ScanOp for a driver that stores the secrets column sealed: open, when not nil, opens it
// before it is decoded.
func ScanOpOpening(row Row, full bool, open func(sealed string) (string, error)) (OpRow, error) {
	var o OpRow
	var exit, expires, started, finished *int64
	var created int64
	dest := []any{&o.Seq, &o.ID, &o.DeploymentID, &o.Step, &o.Name, &o.Pool, &o.Syntax, &o.Image, &o.JSON.Requests,
		&o.TimeoutSeconds, &o.JSON.Capabilities, &o.State, &exit, &o.Message, &o.WorkerID, &o.CancelRequested,
		&o.LeaseID, &expires, &o.LastSeq, &created, &started, &finished, &o.JSON.Usage, &o.Profile, &o.JSON.Overrides}
	if full {
		dest = append(dest, &o.JSON.Body, &o.JSON.Secrets)
	}
	if err := row.Scan(dest...); err != nil {
		return o, err
	}
	if exit != nil {
		code := int(*exit)
		o.ExitCode = &code
	}
	if expires != nil {
		o.LeaseExpiresAt = fromNanos(*expires)
	}
	o.CreatedAt, o.FinishedAt = fromNanos(created), nanosPtr(finished)
	o.StartedAt = nanosPtr(started)
	if open != nil && o.JSON.Secrets != nil {
		plain, err := open(*o.JSON.Secrets)
		if err != nil {
			return o, fmt.Errorf("operation %s: %w", o.ID, err)
		}
		o.JSON.Secrets = &plain
	}
	return o, o.JSON.Decode(&o.Operation)
}

// Lease is the lease the row holds, with the operation's sensitive values in it.
func (o OpRow) Lease() api.Lease {
	return api.Lease{LeaseID: o.LeaseID, ExpiresAt: o.LeaseExpiresAt, LastSeq: o.LastSeq, Operation: o.JSON.Unmasked(o.Operation)}
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nanosPtr(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := fromNanos(*n)
	return &t
}
