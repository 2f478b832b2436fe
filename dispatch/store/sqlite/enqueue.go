package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// insertOperation inserts a queued operation and returns it with its seq.
func (s *Store) insertOperation(ctx context.Context, tx *sql.Tx, op store.NewOperation, depID string, step int, ready bool, message string) (api.Operation, int64, error) {
	spec := op.Spec
	var exists int
	if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM pools WHERE name = ?`, spec.Pool).Scan(&exists); err != nil {
		return api.Operation{}, 0, fmt.Errorf("checking pool %q: %w", spec.Pool, err)
	}
	if exists == 0 {
		return api.Operation{}, 0, fmt.Errorf("pool %q: %w", spec.Pool, store.ErrNotFound)
	}
	body := opBody{Script: spec.Script, Files: spec.Files}
	secrets := map[int]string{}
	for i, v := range spec.Variables {
		if v.Sensitive {
			secrets[i] = v.Value
			v.Value = mask.Placeholder
		}
		body.Variables = append(body.Variables, v)
	}
	bodyJSON, err := json.Marshal(body)
	if err != nil {
		return api.Operation{}, 0, fmt.Errorf("encoding operation body: %w", err)
	}
	var secretsJSON, requestsJSON, capsJSON sql.NullString
	if len(secrets) > 0 {
		b, _ := json.Marshal(secrets)
		secretsJSON = sql.NullString{String: string(b), Valid: true}
	}
	if spec.Requests != nil {
		b, _ := json.Marshal(spec.Requests)
		requestsJSON = sql.NullString{String: string(b), Valid: true}
	}
	if len(spec.Capabilities) > 0 {
		b, _ := json.Marshal(spec.Capabilities)
		capsJSON = sql.NullString{String: string(b), Valid: true}
	}
	var dep sql.NullString
	if depID != "" {
		dep = sql.NullString{String: depID, Valid: true}
	}
	res, err := s.txExec(ctx, tx, `INSERT INTO operations (id, deployment_id, step, name, pool, syntax, image, requests,
		timeout_seconds, capabilities, body, secrets, ready, state, message, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)`,
		op.ID, dep, step, spec.Name, spec.Pool, spec.Syntax, spec.Image, requestsJSON, spec.TimeoutSeconds, capsJSON,
		string(bodyJSON), secretsJSON, boolInt(ready), message, nanos(op.CreatedAt))
	if err != nil {
		if isUniqueViolation(err) {
			return api.Operation{}, 0, fmt.Errorf("operation %s: %w", op.ID, store.ErrExists)
		}
		return api.Operation{}, 0, fmt.Errorf("inserting operation %s: %w", op.ID, err)
	}
	seq, err := res.LastInsertId()
	if err != nil {
		return api.Operation{}, 0, fmt.Errorf("inserting operation %s: %w", op.ID, err)
	}
	out := api.Operation{ID: op.ID, DeploymentID: depID, Step: step, OperationSpec: spec, State: api.StateQueued,
		Message: message, CreatedAt: op.CreatedAt.UTC()}
	out.Variables = body.Variables
	return out, seq, nil
}

// CreateOperation enqueues one operation.
func (s *Store) CreateOperation(ctx context.Context, op store.NewOperation) (api.Operation, error) {
	var out api.Operation
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		out, _, err = s.insertOperation(ctx, tx, op, "", 0, true, "")
		return err
	})
	if err != nil {
		return out, fmt.Errorf("enqueueing operation: %w", err)
	}
	return out, nil
}

// errWorkerGone rolls back a hand-off whose worker no longer exists.
var errWorkerGone = errors.New("the worker no longer exists")

// CreateLeasedOperation enqueues an operation and, in the same transaction, leases it to a waiting worker the
// way Claim does (leaseRow); nil, with nothing stored, when the worker no longer exists.
func (s *Store) CreateLeasedOperation(ctx context.Context, op store.NewOperation, p store.ClaimParams) (*api.Lease, error) {
	var lease *api.Lease
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, seq, err := s.insertOperation(ctx, tx, op, "", 0, true, "")
		if err != nil {
			return err
		}
		if lease, err = s.leaseRow(ctx, tx, handOffSQL, p, sql.Named("seq", seq)); err != nil {
			return fmt.Errorf("leasing operation %s: %w", op.ID, err)
		}
		if lease == nil {
			return errWorkerGone // roll the insert back: the caller enqueues the operation instead
		}
		return nil
	})
	if errors.Is(err, errWorkerGone) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("enqueueing operation leased to worker %s: %w", p.WorkerID, err)
	}
	return lease, nil
}
