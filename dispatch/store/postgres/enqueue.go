package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// newCols are the columns of a new operation; newArgs gives their values.
const newCols = `id, deployment_id, step, name, pool, syntax, image, requests, timeout_seconds, capabilities, body,
	secrets, ready, message, created_at, target_worker, profile, overrides`

// insertQueuedSQL enqueues an operation; insertLeasedSQL inserts it already leased (leaseSet's columns, $1-$8,
// then the new columns from $9).
const (
	insertQueuedSQL = `INSERT INTO operations (` + newCols + `, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
		$11, $12, $13, $14, $15, $16, $17, $18, 'queued') RETURNING seq`
	insertLeasedSQL = `INSERT INTO operations (state, worker_id, lease_id, lease_request_id, lease_expires_at, leased_at,
		pod_token_hash, sealing_key, log_limit, ` + newCols + `) VALUES ('leased', $1, $2, $3, $4, $5, $6, $7, $8,
		$9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) RETURNING ` + opColsFull
)

// newArgs returns the values of newCols, and the variables as stored (sensitive values masked; they are kept
// apart, in secrets).
func newArgs(op store.NewOperation, depID string, step int, ready bool, message string) ([]any, []api.Variable, error) {
	spec := op.Spec
	j, vars, err := store.EncodeOp(spec, op.Packages)
	if err != nil {
		return nil, nil, err
	}
	return []any{op.ID, nullString(depID), step, spec.Name, spec.Pool, spec.Syntax, spec.Image, j.Requests,
		spec.TimeoutSeconds, j.Capabilities, j.Body, j.Secrets, ready, message, nanos(op.CreatedAt),
		nullString(op.TargetWorker), nullString(spec.Profile), j.Overrides}, vars, nil
}

// insertOperation inserts a queued operation.
func insertOperation(ctx context.Context, tx pgx.Tx, op store.NewOperation, depID string, step int, ready bool, message string) (api.Operation, error) {
	args, vars, err := newArgs(op, depID, step, ready, message)
	if err != nil {
		return api.Operation{}, err
	}
	var seq int64
	if err := tx.QueryRow(ctx, insertQueuedSQL, args...).Scan(&seq); err != nil {
		return api.Operation{}, insertErr(op, err)
	}
	if err := insertPackageRefs(ctx, tx, seq, op); err != nil {
		return api.Operation{}, err
	}
	out := api.Operation{ID: op.ID, DeploymentID: depID, Step: step, OperationSpec: op.Spec, State: api.StateQueued,
		Message: message, CreatedAt: op.CreatedAt.UTC(), ResolvedPackages: op.Packages}
	out.Variables = vars
	return out, nil
}

// insertErr is the error of inserting op: ErrExists for a taken id, ErrNotFound for a pool that does not
// exist (pools are never deleted, so the foreign key decides it).
func insertErr(op store.NewOperation, err error) error {
	var pe *pgconn.PgError
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("operation %s: %w", op.ID, store.ErrExists)
	case errors.As(err, &pe) && pe.Code == "23503" && pe.ConstraintName == "operations_pool_fkey":
		return fmt.Errorf("pool %q: %w", op.Spec.Pool, store.ErrNotFound)
	}
	return fmt.Errorf("inserting operation %s: %w", op.ID, err)
}

// insertPackageRefs records the packages an operation (seq, inserted in this transaction) references. The
// foreign key refuses a package that is not stored; it also locks the package's row, so retention
// (DeletePackages) on another server cannot delete it before this commits.
func insertPackageRefs(ctx context.Context, tx pgx.Tx, seq int64, op store.NewOperation) error {
	if len(op.Packages) == 0 {
		return nil
	}
	names, versions := make([]string, len(op.Packages)), make([]string, len(op.Packages))
	for i, p := range op.Packages {
		names[i], versions[i] = p.Name, p.Version
	}
	_, err := tx.Exec(ctx, `INSERT INTO operation_packages (op_seq, idx, name, version)
		SELECT $1, i - 1, n, v FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t (n, v, i)`, seq, names, versions)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" {
		return fmt.Errorf("a package of operation %s is no longer stored (retention deleted it meanwhile): push it again: %w",
			op.ID, store.ErrInvalid)
	}
	if err != nil {
		return fmt.Errorf("recording the packages of operation %s: %w", op.ID, err)
	}
	return nil
}

// CreateOperation enqueues one operation.
func (s *Store) CreateOperation(ctx context.Context, op store.NewOperation) (api.Operation, error) {
	var out api.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = insertOperation(ctx, tx, op, "", 0, true, "")
		return err
	})
	if err != nil {
		return out, fmt.Errorf("enqueueing operation: %w", err)
	}
	return out, nil
}

// CreateLeasedOperation enqueues an operation already leased to a waiting worker, deciding as Claim does
// (lockWorker) and setting the lease columns the way it does (leaseRow); nil, with nothing stored, when the
// worker may not take work now.
func (s *Store) CreateLeasedOperation(ctx context.Context, op store.NewOperation, p store.ClaimParams) (*api.Lease, error) {
	var lease *api.Lease
	err := s.tx(ctx, func(tx pgx.Tx) error {
		lease = nil
		op.TargetWorker = "" // a hand-off leases to the waiting worker: there is nothing to target
		args, _, err := newArgs(op, "", 0, true, "")
		if err != nil {
			return err
		}
		_, fit, capacity, err := lockWorker(ctx, tx, p)
		if err != nil || !fit {
			return err
		}
		if room, err := hasRoom(ctx, tx, p, capacity); err != nil || !room {
			return err
		}
		l, err := leaseRow(ctx, tx, insertLeasedSQL, p, args...)
		if err != nil {
			return insertErr(op, err)
		}
		if l == nil {
			return nil // the operation went in a moment after: it is stored only leased
		}
		if len(op.Packages) > 0 {
			var seq int64
			if err := tx.QueryRow(ctx, `SELECT seq FROM operations WHERE id = $1`, op.ID).Scan(&seq); err != nil {
				return fmt.Errorf("reading operation %s: %w", op.ID, err)
			}
			if err := insertPackageRefs(ctx, tx, seq, op); err != nil {
				return err
			}
		}
		lease = l
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("enqueueing operation leased to worker %s: %w", p.WorkerID, err)
	}
	return lease, nil
}
