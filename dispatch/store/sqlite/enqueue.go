package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// newCols are the columns of a new operation and newVals their values (the named args newOpArgs returns).
const (
	newCols = `id, deployment_id, step, name, pool, syntax, image, requests, timeout_seconds, capabilities, body,
	secrets, secrets_kid, ready, message, created_at, target_worker, profile, overrides`
	newVals = `@id, @dep, @step, @name, @pool, @syntax, @image, @requests, @timeout, @caps, @body, @secrets, @secretskid, @ready,
	@message, @created, @target, @profile, @overrides`
)

// insertQueuedSQL enqueues an operation; insertLeasedSQL inserts it already leased, with the lease columns a
// claim sets, when the worker exists (one statement: the hand-off costs what an enqueue does).
const (
	insertQueuedSQL = `INSERT INTO operations (` + newCols + `, state) VALUES (` + newVals + `, 'queued')`
	insertLeasedSQL = `INSERT INTO operations (` + newCols + `, ` + leaseCols + `)
	SELECT ` + newVals + `, ` + leaseVals + ` WHERE ` + leaseGuard + leaseReturning
)

// insertOperation inserts a queued operation.
func (s *Store) insertOperation(ctx context.Context, tx *sql.Tx, op store.NewOperation, depID string, step int, ready bool, message string) (api.Operation, error) {
	args, vars, err := s.newOpArgs(ctx, tx, op, depID, step, ready, message)
	if err != nil {
		return api.Operation{}, err
	}
	if _, err := s.txExec(ctx, tx, insertQueuedSQL, args...); err != nil {
		return api.Operation{}, insertErr(op.ID, err)
	}
	if err := s.insertPackageRefs(ctx, tx, op.ID, op.Packages); err != nil {
		return api.Operation{}, err
	}
	out := api.Operation{ID: op.ID, DeploymentID: depID, Step: step, OperationSpec: op.Spec, State: api.StateQueued,
		Message: message, CreatedAt: op.CreatedAt.UTC(), ResolvedPackages: op.Packages}
	out.Variables = vars
	return out, nil
}

func insertErr(id string, err error) error {
	if isUniqueViolation(err) {
		return fmt.Errorf("operation %s: %w", id, store.ErrExists)
	}
	return fmt.Errorf("inserting operation %s: %w", id, err)
}

// newOpArgs checks that the operation's pool exists and returns the named values of newVals, and the variables
// as stored (sensitive values masked; they are kept apart, in secrets).
func (s *Store) newOpArgs(ctx context.Context, tx *sql.Tx, op store.NewOperation, depID string, step int, ready bool, message string) ([]any, []api.Variable, error) {
	spec := op.Spec
	var exists int
	if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM pools WHERE name = ?`, spec.Pool).Scan(&exists); err != nil {
		return nil, nil, fmt.Errorf("checking pool %q: %w", spec.Pool, err)
	}
	if exists == 0 {
		return nil, nil, fmt.Errorf("pool %q: %w", spec.Pool, store.ErrNotFound)
	}
	j, vars, err := store.EncodeOp(spec, op.Packages)
	if err != nil {
		return nil, nil, err
	}
	secrets, secretsKid := s.sealSecrets(j.Secrets)
	var dep sql.NullString
	if depID != "" {
		dep = sql.NullString{String: depID, Valid: true}
	}
	return []any{sql.Named("id", op.ID), sql.Named("dep", dep), sql.Named("step", step), sql.Named("name", spec.Name),
		sql.Named("pool", spec.Pool), sql.Named("syntax", spec.Syntax), sql.Named("image", spec.Image),
		sql.Named("requests", j.Requests), sql.Named("timeout", spec.TimeoutSeconds), sql.Named("caps", j.Capabilities),
		sql.Named("body", j.Body), sql.Named("secrets", secrets), sql.Named("secretskid", secretsKid),
		sql.Named("ready", boolInt(ready)),
		sql.Named("message", message), sql.Named("created", nanos(op.CreatedAt)),
		sql.Named("target", sql.NullString{String: op.TargetWorker, Valid: op.TargetWorker != ""}),
		sql.Named("profile", sql.NullString{String: spec.Profile, Valid: spec.Profile != ""}),
		sql.Named("overrides", j.Overrides)}, vars, nil
}

// CreateOperation enqueues one operation.
func (s *Store) CreateOperation(ctx context.Context, op store.NewOperation) (api.Operation, error) {
	var out api.Operation
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		out, err = s.insertOperation(ctx, tx, op, "", 0, true, "")
		return err
	})
	if err != nil {
		return out, fmt.Errorf("enqueueing operation: %w", err)
	}
	return out, nil
}

// CreateLeasedOperation enqueues an operation already leased to a waiting worker, in one INSERT that sets the
// lease columns the way Claim does (leaseRow); nil, with nothing stored, when the worker no longer exists.
func (s *Store) CreateLeasedOperation(ctx context.Context, op store.NewOperation, p store.ClaimParams) (*api.Lease, error) {
	var lease *api.Lease
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		op.TargetWorker = "" // a hand-off leases to the waiting worker: there is nothing to target
		args, _, err := s.newOpArgs(ctx, tx, op, "", 0, true, "")
		if err != nil {
			return err
		}
		if lease, err = s.leaseRow(ctx, tx, insertLeasedSQL, p, args...); err != nil {
			return insertErr(op.ID, err)
		}
		if lease == nil {
			return nil
		}
		return s.insertPackageRefs(ctx, tx, op.ID, op.Packages)
	})
	if err != nil {
		return nil, fmt.Errorf("enqueueing operation leased to worker %s: %w", p.WorkerID, err)
	}
	return lease, nil
}
