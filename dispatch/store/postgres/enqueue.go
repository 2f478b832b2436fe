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

// insertQueuedSQL enqueues an operation.
const insertQueuedSQL = `INSERT INTO operations (` + newCols + `, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
	$11, $12, $13, $14, $15, $16, $17, $18, 'queued') RETURNING seq`

// handOffSQL inserts an operation already leased to worker $1 (leaseSet's columns, $1-$8, then newCols from $9
// to $26) when that worker is fit for work (not asked to drain, healthy, its last heartbeat at or after $27)
// and holds fewer live leases than its capacity; otherwise it inserts nothing. It runs after lockWorkerSQL, in
// the same transaction, so it reads the worker's row and counts its leases after it holds the lock.
const handOffSQL = `INSERT INTO operations (state, worker_id, lease_id, lease_request_id, lease_expires_at, leased_at,
	pod_token_hash, sealing_key, log_limit, ` + newCols + `) SELECT 'leased', $1, $2, $3, $4, $5, $6, $7, $8,
	$9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26
	WHERE EXISTS (SELECT 1 FROM workers w WHERE w.id = $1 AND NOT w.drain_requested AND w.healthy
		AND w.last_heartbeat >= $27
		AND (SELECT count(*) FROM operations l WHERE l.worker_id = $1 AND l.state IN ('leased', 'running')) < w.capacity)
	RETURNING ` + opColsFull

// packageRefsSQL records the packages (names $2, versions $3) that operation $1 references.
const packageRefsSQL = `INSERT INTO operation_packages (op_seq, idx, name, version)
	SELECT o.seq, i - 1, n, v FROM operations o, unnest($2::text[], $3::text[]) WITH ORDINALITY AS t (n, v, i)
	WHERE o.id = $1`

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
	if len(op.Packages) > 0 {
		if _, err := tx.Exec(ctx, packageRefsSQL, packageRefsArgs(op)...); err != nil {
			return api.Operation{}, packageRefsErr(op, err)
		}
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

// packageRefsArgs returns packageRefsSQL's arguments for op.
func packageRefsArgs(op store.NewOperation) []any {
	names, versions := make([]string, len(op.Packages)), make([]string, len(op.Packages))
	for i, p := range op.Packages {
		names[i], versions[i] = p.Name, p.Version
	}
	return []any{op.ID, names, versions}
}

// packageRefsErr is the error of recording op's packages. The foreign key refuses a package that is not
// stored; it also locks the package's row, so retention (DeletePackages) on another server cannot delete it
// before the operation commits.
func packageRefsErr(op store.NewOperation, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" {
		return fmt.Errorf("a package of operation %s is no longer stored (retention deleted it meanwhile): push it again: %w",
			op.ID, store.ErrInvalid)
	}
	return fmt.Errorf("recording the packages of operation %s: %w", op.ID, err)
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
// (lock the worker's row, then read it and count its leases) and setting the lease columns the way it does;
// nil, with nothing stored, when the worker may not take work now.
//
// It is the submit→lease hand-off, so it costs one round trip: its statements go as one batch, which
// PostgreSQL runs as one implicit transaction (each statement with its own snapshot, as in an explicit one).
// Each round trip waits for the database's process and then for this one to be scheduled again; with five
// (BEGIN, lock, count, insert, COMMIT) a hand-off took 394-402 µs in BenchmarkCreateLeasedOperation
// (storebench), as one batch 163-191 µs on the same machine.
func (s *Store) CreateLeasedOperation(ctx context.Context, op store.NewOperation, p store.ClaimParams) (*api.Lease, error) {
	op.TargetWorker = "" // a hand-off leases to the waiting worker: there is nothing to target
	args, _, err := newArgs(op, "", 0, true, "")
	if err != nil {
		return nil, fmt.Errorf("enqueueing operation leased to worker %s: %w", p.WorkerID, err)
	}
	var lease *api.Lease
	err = s.retry(ctx, func() (err error) {
		lease, err = s.handOff(ctx, op, p, args)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("enqueueing operation leased to worker %s: %w", p.WorkerID, err)
	}
	return lease, nil
}

// handOff sends CreateLeasedOperation's statements (args: op's newArgs) as one batch and reads their results.
// Nothing of it is stored unless every statement succeeds: the transaction commits when the batch ends.
func (s *Store) handOff(ctx context.Context, op store.NewOperation, p store.ClaimParams, args []any) (lease *api.Lease, err error) {
	var b pgx.Batch
	b.Queue(lockWorkerSQL, p.WorkerID)
	b.Queue(handOffSQL, append(append(leaseArgs(p), args...), sinceNanos(p.HeartbeatSince))...)
	if len(op.Packages) > 0 {
		b.Queue(packageRefsSQL+` AND o.lease_id = $4`, append(packageRefsArgs(op), p.LeaseID)...)
	}
	br := s.pool.SendBatch(ctx, &b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			lease, err = nil, cerr
		}
	}()
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("locking worker %s: %w", p.WorkerID, err)
	}
	o, err := scanOp(br.QueryRow(), true)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil // the worker may not take work now: its packages' statement records nothing either
	}
	if err != nil {
		return nil, insertErr(op, err)
	}
	if len(op.Packages) > 0 {
		if _, err := br.Exec(); err != nil {
			return nil, packageRefsErr(op, err)
		}
	}
	l := o.Lease()
	l.SealingKey = p.SealingKey
	return &l, nil
}
