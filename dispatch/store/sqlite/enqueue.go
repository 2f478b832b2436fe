package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// insertOperation inserts a queued operation, or one leased already when claim is set.
func (s *Store) insertOperation(ctx context.Context, tx *sql.Tx, op store.NewOperation, depID string, step int, ready bool, message string, claim *store.ClaimParams) (api.Operation, error) {
	spec := op.Spec
	var exists int
	if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM pools WHERE name = ?`, spec.Pool).Scan(&exists); err != nil {
		return api.Operation{}, fmt.Errorf("checking pool %q: %w", spec.Pool, err)
	}
	if exists == 0 {
		return api.Operation{}, fmt.Errorf("pool %q: %w", spec.Pool, store.ErrNotFound)
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
		return api.Operation{}, fmt.Errorf("encoding operation body: %w", err)
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
	state := api.StateQueued
	var worker, leaseID, reqID sql.NullString
	var expires, leased sql.NullInt64
	if claim != nil {
		state = api.StateLeased
		worker = sql.NullString{String: claim.WorkerID, Valid: true}
		leaseID = sql.NullString{String: claim.LeaseID, Valid: true}
		reqID = sql.NullString{String: claim.RequestID, Valid: claim.RequestID != ""}
		expires = sql.NullInt64{Int64: nanos(claim.ExpiresAt), Valid: true}
		leased = sql.NullInt64{Int64: nanos(claim.Now), Valid: true}
	}
	if _, err := s.txExec(ctx, tx, `INSERT INTO operations (id, deployment_id, step, name, pool, syntax, image, requests,
		timeout_seconds, capabilities, body, secrets, ready, state, message, created_at,
		worker_id, lease_id, lease_request_id, lease_expires_at, leased_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		op.ID, dep, step, spec.Name, spec.Pool, spec.Syntax, spec.Image, requestsJSON, spec.TimeoutSeconds, capsJSON,
		string(bodyJSON), secretsJSON, boolInt(ready), state, message, nanos(op.CreatedAt),
		worker, leaseID, reqID, expires, leased); err != nil {
		if isUniqueViolation(err) {
			return api.Operation{}, fmt.Errorf("operation %s: %w", op.ID, store.ErrExists)
		}
		return api.Operation{}, fmt.Errorf("inserting operation %s: %w", op.ID, err)
	}
	out := api.Operation{ID: op.ID, DeploymentID: depID, Step: step, OperationSpec: spec, State: state,
		Message: message, CreatedAt: op.CreatedAt.UTC(), WorkerID: worker.String}
	out.Variables = body.Variables
	return out, nil
}

// CreateOperation enqueues one operation.
func (s *Store) CreateOperation(ctx context.Context, op store.NewOperation) (api.Operation, error) {
	var out api.Operation
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		out, err = s.insertOperation(ctx, tx, op, "", 0, true, "", nil)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("enqueueing operation: %w", err)
	}
	return out, nil
}

// CreateLeasedOperation enqueues an operation already leased to a waiting worker; nil when the worker no
// longer exists.
func (s *Store) CreateLeasedOperation(ctx context.Context, op store.NewOperation, p store.ClaimParams) (*api.Lease, error) {
	var out api.Operation
	gone := false
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM workers WHERE id = ?`, p.WorkerID).Scan(&n); err != nil {
			return fmt.Errorf("checking worker %s: %w", p.WorkerID, err)
		}
		if gone = n == 0; gone {
			return nil
		}
		var err error
		out, err = s.insertOperation(ctx, tx, op, "", 0, true, "", &p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("enqueueing operation leased to worker %s: %w", p.WorkerID, err)
	}
	if gone {
		return nil, nil
	}
	out.Variables = op.Spec.Variables // the worker gets the values in clear
	return &api.Lease{LeaseID: p.LeaseID, ExpiresAt: p.ExpiresAt.UTC(), Operation: out}, nil
}
