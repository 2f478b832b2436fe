package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// opBody is the part of a spec kept in the body column: what the worker needs and a list leaves out.
type opBody struct {
	Script    string         `json:"script"`
	Files     []api.File     `json:"files,omitempty"`
	Variables []api.Variable `json:"variables,omitempty"` // sensitive values replaced by mask.Placeholder
}

// opRow is an operation row with the columns api.Operation does not show.
type opRow struct {
	api.Operation
	seq            int64
	leaseID        string
	leaseExpiresAt time.Time
	lastSeq        int64
	secrets        map[int]string // variable index -> sensitive value
}

const opCols = `seq, id, COALESCE(deployment_id, ''), step, name, pool, syntax, image, requests, timeout_seconds,
	capabilities, state, exit_code, message, COALESCE(worker_id, ''), cancel_requested, COALESCE(lease_id, ''),
	lease_expires_at, last_seq, created_at, started_at, finished_at`

// scanOp reads opCols, followed by body and secrets when full is set.
func scanOp(row interface{ Scan(...any) error }, full bool) (opRow, error) {
	var o opRow
	var requests, caps, body, secrets sql.NullString
	var exit, expires, started, finished sql.NullInt64
	var cancel int
	var created int64
	dest := []any{&o.seq, &o.ID, &o.DeploymentID, &o.Step, &o.Name, &o.Pool, &o.Syntax, &o.Image, &requests,
		&o.TimeoutSeconds, &caps, &o.State, &exit, &o.Message, &o.WorkerID, &cancel, &o.leaseID, &expires, &o.lastSeq,
		&created, &started, &finished}
	if full {
		dest = append(dest, &body, &secrets)
	}
	if err := row.Scan(dest...); err != nil {
		return o, err
	}
	if requests.Valid {
		o.Requests = new(api.Resources)
		if err := json.Unmarshal([]byte(requests.String), o.Requests); err != nil {
			return o, fmt.Errorf("decoding requests of %s: %w", o.ID, err)
		}
	}
	if caps.Valid {
		if err := json.Unmarshal([]byte(caps.String), &o.Capabilities); err != nil {
			return o, fmt.Errorf("decoding capabilities of %s: %w", o.ID, err)
		}
	}
	if exit.Valid {
		code := int(exit.Int64)
		o.ExitCode = &code
	}
	o.CancelRequested = cancel == 1
	if expires.Valid {
		o.leaseExpiresAt = fromNanos(expires.Int64)
	}
	o.CreatedAt, o.StartedAt, o.FinishedAt = fromNanos(created), timePtr(started), timePtr(finished)
	if body.Valid {
		var b opBody
		if err := json.Unmarshal([]byte(body.String), &b); err != nil {
			return o, fmt.Errorf("decoding body of %s: %w", o.ID, err)
		}
		o.Script, o.Files, o.Variables = b.Script, b.Files, b.Variables
	}
	if secrets.Valid {
		if err := json.Unmarshal([]byte(secrets.String), &o.secrets); err != nil {
			return o, fmt.Errorf("decoding sensitive values of %s: %w", o.ID, err)
		}
	}
	return o, nil
}

// unmasked returns the operation with its sensitive values in clear (for a lease).
func (o opRow) unmasked() api.Operation {
	op := o.Operation
	if len(o.secrets) > 0 {
		op.Variables = append([]api.Variable(nil), op.Variables...)
		for i, v := range o.secrets {
			if i >= 0 && i < len(op.Variables) {
				op.Variables[i].Value = v
			}
		}
	}
	return op
}

func (o opRow) lease() api.Lease {
	return api.Lease{LeaseID: o.leaseID, ExpiresAt: o.leaseExpiresAt, LastSeq: o.lastSeq, Operation: o.unmasked()}
}

func (s *Store) queryOps(ctx context.Context, q string, args ...any) ([]api.Operation, error) {
	rows, err := s.rQuery(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	rs, err := scanOps(rows, false)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	ops := make([]api.Operation, 0, len(rs))
	for _, o := range rs {
		ops = append(ops, o.Operation)
	}
	return ops, nil
}

// scanOps reads every row of rows as scanOp does and closes rows (inside a transaction, before the next
// statement).
func scanOps(rows *sql.Rows, full bool) ([]opRow, error) {
	defer rows.Close()
	var ops []opRow
	for rows.Next() {
		o, err := scanOp(rows, full)
		if err != nil {
			return nil, err
		}
		ops = append(ops, o)
	}
	return ops, rows.Err()
}
