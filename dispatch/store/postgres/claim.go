package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// How a lease is decided with several servers. SQLite decides who gets work in the one statement that
// leases, and its single writer makes that statement see every lease before it. In PostgreSQL two servers'
// claims run at once, so:
//   - Every lease to a worker (Claim, CreateLeasedOperation) first locks the worker's row (lockWorkerSQL) and
//     only then, in a later statement of the same transaction (READ COMMITTED takes a new snapshot per
//     statement), reads the row, counts its live leases and leases. Both send their statements as one batch:
//     one round trip, one implicit transaction. Two claims for one worker therefore take turns, and the
//     second counts the first's lease: capacity holds. A drain (SetDrain), a heartbeat's health and a removal
//     (RemoveWorker) write that row too, so they are ordered with the claims: a claim either leased before
//     them or sees them.
//   - The operation is picked with FOR UPDATE SKIP LOCKED: concurrent claims skip the rows another claim has
//     locked instead of waiting for them, and a row that another transaction leased meanwhile fails the
//     re-check of state = 'queued' when it is locked, so an operation is leased once.

// leaseSet sets the lease columns from leaseArgs ($1-$8); the statements that lease bind their own args
// after them, from $9.
const leaseSet = `state = 'leased', worker_id = $1, lease_id = $2, lease_request_id = $3, lease_expires_at = $4,
	leased_at = $5, pod_token_hash = $6, sealing_key = $7, log_limit = $8`

// queueMatch is what an operation o of the pool queue needs of a worker: its required capabilities all
// among the worker's (parameter $caps, a JSON array), and its profile one the worker offers ($profiles):
// store.Offer.Takes, in SQL.
func queueMatch(caps, profiles int) string {
	return fmt.Sprintf(`o.state = 'queued' AND o.ready AND o.target_worker IS NULL
	AND (o.capabilities IS NULL OR o.capabilities::jsonb <@ $%d::jsonb)
	AND (o.profile IS NULL OR o.profile = ANY($%d))`, caps, profiles)
}

// claimSQL leases to worker $1, whose row lockWorkerSQL locked in an earlier statement, when it is not asked
// to drain, has no live lease of request $3 to replay (replaySQL's) and holds fewer live leases than its
// capacity: the oldest queued operation targeted at it, else, when it is fit for work (healthy, its last
// heartbeat at or after $12), the oldest claimable operation of its pools ($9) that it can take
// (capabilities $10, profiles $11). CASE and COALESCE run their subqueries only when reached, so a full
// worker locks nothing, and the pool queue is searched only without a targeted operation. Per pool the search
// walks the queue index in order and stops at the first operation the worker can take and no other claim
// holds, so a claim costs the same with 10 or 100,000 operations queued. The worker's row and the count are
// read in this statement, after the lock was taken, so they see every lease a claim that held the lock before
// committed.
var claimSQL = `UPDATE operations SET ` + leaseSet + ` WHERE seq = (SELECT CASE
	WHEN w.drain_requested THEN NULL
	WHEN EXISTS (SELECT 1 FROM operations r WHERE r.worker_id = $1 AND r.lease_request_id = $3
		AND r.state IN ('leased', 'running') AND r.lease_expires_at >= $5) THEN NULL
	WHEN (SELECT count(*) FROM operations l WHERE l.worker_id = $1 AND l.state IN ('leased', 'running')) < w.capacity
	THEN COALESCE(
		(SELECT t.seq FROM operations t WHERE t.target_worker = $1 AND t.state = 'queued'
			ORDER BY t.seq LIMIT 1 FOR UPDATE SKIP LOCKED),
		CASE WHEN w.healthy AND w.last_heartbeat >= $12 THEN (SELECT p.seq FROM unnest($9::text[]) AS pool (name), LATERAL (
			SELECT o.seq FROM operations o WHERE o.pool = pool.name AND ` + queueMatch(10, 11) + `
			ORDER BY o.seq LIMIT 1 FOR UPDATE SKIP LOCKED) p
		ORDER BY p.seq LIMIT 1) END)
	END FROM workers w WHERE w.id = $1) RETURNING ` + opColsFull

// replaySQL finds the live lease that worker $1's request $2 was granted (its reply was lost; the worker asks
// again with the same request id) and gives it the pod token hash $4 of this reply; replayKeySQL reads its
// sealing key.
const (
	replaySQL = `UPDATE operations SET pod_token_hash = $4 WHERE seq = (SELECT seq FROM operations
		WHERE worker_id = $1 AND lease_request_id = $2 AND state IN ('leased', 'running') AND lease_expires_at >= $3
		LIMIT 1 FOR UPDATE) RETURNING ` + opColsFull
	replayKeySQL = `SELECT sealing_key FROM operations WHERE worker_id = $1 AND lease_request_id = $2
		AND state IN ('leased', 'running') AND lease_expires_at >= $3 LIMIT 1`
)

// startDeploymentSQL marks running the deployment whose step claimSQL leased (worker $1, lease $2).
const startDeploymentSQL = `UPDATE deployments SET state = 'running' WHERE state = 'queued' AND id IN (SELECT deployment_id
	FROM operations WHERE worker_id = $1 AND lease_id = $2 AND state = 'leased')`

// claimableSQL answers, without a lock, whether a claim could find anything: an operation to pick or a
// lease to replay (worker $1, request id $2, pools $3, capabilities $4, profiles $5). Most long-polls start
// with nothing to claim; this keeps them off the worker's row lock. Its ORDER BY, as the claim's, leads the
// planner to the queue index (without it, it may scan the table from the oldest operation).
var claimableSQL = `SELECT EXISTS (SELECT 1 FROM operations WHERE target_worker = $1 AND state = 'queued')
	OR EXISTS (SELECT 1 FROM unnest($3::text[]) AS pool (name), LATERAL (
		SELECT 1 FROM operations o WHERE o.pool = pool.name AND ` + queueMatch(4, 5) + `
		ORDER BY o.seq LIMIT 1) p)
	OR EXISTS (SELECT 1 FROM operations WHERE worker_id = $1 AND lease_request_id = $2
		AND state IN ('leased', 'running'))`

// Claim leases the oldest operation targeted at the worker, else the oldest claimable operation it can take.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (*api.Lease, error) {
	match := []any{nonNil(p.Pools), store.EncodeList(p.Capabilities), nonNil(p.Profiles)}
	// A statement sees every commit made before it starts, so "nothing" here is as good as the transaction's
	// answer would have been at this moment; the caller waits for a wake-up after it.
	var claimable bool
	if err := s.pool.QueryRow(ctx, claimableSQL, append([]any{p.WorkerID, nullString(p.RequestID)}, match...)...).Scan(&claimable); err != nil {
		return nil, fmt.Errorf("leasing for worker %s: looking for work: %w", p.WorkerID, err)
	}
	if !claimable {
		return nil, nil
	}
	var lease *api.Lease
	err := s.retry(ctx, func() (err error) {
		lease, err = s.claim(ctx, p, match)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("leasing for worker %s: %w", p.WorkerID, err)
	}
	return lease, nil
}

// claim sends Claim's statements as one batch (one round trip, one implicit transaction: see
// CreateLeasedOperation): lock the worker's row, replay a lease whose reply was lost, else lease anew. It
// returns the replayed lease, else the new one, else nil.
func (s *Store) claim(ctx context.Context, p store.ClaimParams, match []any) (lease *api.Lease, err error) {
	var b pgx.Batch
	b.Queue(lockWorkerSQL, p.WorkerID)
	if p.RequestID != "" {
		b.Queue(replaySQL, p.WorkerID, p.RequestID, nanos(p.Now), nullString(p.PodTokenHash))
		b.Queue(replayKeySQL, p.WorkerID, p.RequestID, nanos(p.Now))
	}
	b.Queue(claimSQL, append(append(leaseArgs(p), match...), sinceNanos(p.HeartbeatSince))...)
	b.Queue(startDeploymentSQL, p.WorkerID, p.LeaseID)
	br := s.pool.SendBatch(ctx, &b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			lease, err = nil, cerr
		}
	}()
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("locking the worker: %w", err)
	}
	if p.RequestID != "" {
		o, err := scanOp(br.QueryRow(), true)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("looking up the lease of request %s: %w", p.RequestID, err)
		}
		replayed := err == nil
		var key []byte
		if err := br.QueryRow().Scan(&key); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("reading the sealing key of request %s: %w", p.RequestID, err)
		}
		if replayed {
			// The reply with the token minted then was lost: the token of this reply replaces it.
			l := o.Lease()
			l.SealingKey = key
			lease = &l
		}
	}
	o, err := scanOp(br.QueryRow(), true)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, err
	default:
		l := o.Lease()
		l.SealingKey = p.SealingKey
		lease = &l
	}
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("starting the deployment: %w", err)
	}
	return lease, nil
}

// lockWorkerSQL locks the row of worker $1; the statement after it reads the row.
const lockWorkerSQL = `SELECT 1 FROM workers WHERE id = $1 FOR NO KEY UPDATE`

// sinceNanos is ClaimParams.HeartbeatSince as the guard compares it: the zero time lets any heartbeat pass.
func sinceNanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return nanos(t)
}

// leaseArgs are the values of leaseSet's $1-$8.
func leaseArgs(p store.ClaimParams) []any {
	return []any{p.WorkerID, p.LeaseID, nullString(p.RequestID), nanos(p.ExpiresAt), nanos(p.Now),
		nullString(p.PodTokenHash), p.SealingKey, max(p.LogLimit, 0)}
}
