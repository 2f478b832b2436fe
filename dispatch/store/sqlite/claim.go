package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// claimPick selects the oldest claimable operation of the worker's pools (@pools, a JSON array) whose
// required capabilities are all among the worker's (@caps) and whose profile the worker offers (@profiles):
// store.Offer.Takes, in SQL. Per pool it walks the
// queue index in order and stops at the first operation the worker can take, so a claim costs the same with
// 10 or 100,000 operations queued. INDEXED BY makes SQLite fail the statement rather than fall back to a scan
// if the index ever stops fitting it. Operations targeted at a worker are not in that index: targetPick finds
// the oldest one targeted at @worker.
const (
	claimPick = `SELECT MIN(first) FROM (
		SELECT (
			SELECT o.seq FROM operations o INDEXED BY operations_queue
			WHERE o.pool = p.value AND o.state = 'queued' AND o.ready = 1 AND o.target_worker IS NULL
			AND (o.capabilities IS NULL OR NOT EXISTS (
				SELECT 1 FROM json_each(o.capabilities) r WHERE r.value NOT IN (SELECT value FROM json_each(@caps))))
			AND (o.profile IS NULL OR o.profile IN (SELECT value FROM json_each(@profiles)))
			ORDER BY o.seq LIMIT 1) AS first
		FROM json_each(@pools) p)`
	targetPick = `SELECT t.seq FROM operations t INDEXED BY operations_targeted
		WHERE t.target_worker = @worker AND t.state = 'queued' AND t.target_worker IS NOT NULL ORDER BY t.seq LIMIT 1`
)

// leaseCols are the columns a lease sets and leaseVals their values (the named args leaseRow binds).
// leaseGuard says whom an operation may be leased to (store's rules): a worker that exists (a removed
// worker's long-poll still in flight gets nothing), is not asked to drain, holds fewer live leases than its
// capacity, and, unless the operation is targeted at it (workerFit), reported healthy in a heartbeat at or
// after @since. The claim (an UPDATE) and the hand-off (an INSERT, CreateLeasedOperation) both lease with
// them, through leaseRow, so the decision is taken in the statement that leases: a drain, a failed check or
// a full worker stops a long-poll that was already waiting.
const (
	leaseCols = `state, worker_id, lease_id, lease_request_id, lease_expires_at, leased_at, pod_token_hash, sealing_key, sealing_kid, log_limit`
	leaseVals = `'leased', @worker, @lease, @request, @expires, @now, @podtoken, @sealkey, @sealkid, @loglimit`
	leaseRoom = `EXISTS (SELECT 1 FROM workers w WHERE w.id = @worker AND w.drain_requested = 0
		AND w.capacity > (SELECT COUNT(*) FROM operations l INDEXED BY operations_worker
			WHERE l.worker_id = @worker AND l.state IN ('leased', 'running')))`
	workerFit      = `EXISTS (SELECT 1 FROM workers w WHERE w.id = @worker AND w.healthy = 1 AND w.last_heartbeat >= @since)`
	leaseGuard     = leaseRoom + ` AND ` + workerFit
	leaseReturning = ` RETURNING ` + opCols + `, body, secrets`
)

// claimSQL picks and leases in one statement: the operation targeted at the worker if any (it needs only a
// free slot), else the pool queue's (when the worker is fit for work).
const claimSQL = `UPDATE operations SET (` + leaseCols + `) = (` + leaseVals + `)
	WHERE seq = COALESCE((` + targetPick + `), (SELECT (` + claimPick + `) WHERE ` + workerFit + `)) AND ` + leaseRoom + leaseReturning

// claimableSQL answers, on a reader, whether a claim would find anything: an operation to pick, or a live
// lease already granted for the request id. Most long-polls start with nothing to claim; this keeps them off
// the single writer. Whether the worker may take it is left to the write.
const claimableSQL = `SELECT (` + claimPick + `) IS NOT NULL OR EXISTS (` + targetPick + `) OR EXISTS (
	SELECT 1 FROM operations WHERE worker_id = @worker AND lease_request_id = @request AND state IN ('leased', 'running'))`

// Claim leases the oldest claimable operation the worker can take. The pick and the lease are one UPDATE.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (*api.Lease, error) {
	match := []any{sql.Named("pools", store.EncodeList(p.Pools)), sql.Named("caps", store.EncodeList(p.Capabilities)),
		sql.Named("profiles", store.EncodeList(p.Profiles))}
	var reqID sql.NullString
	if p.RequestID != "" {
		reqID = sql.NullString{String: p.RequestID, Valid: true}
	}
	// A reader sees every commit made before it starts, so "nothing" here is as good as the write's answer
	// would have been at this moment; the caller waits for a wake-up after it.
	var claimable bool
	if err := s.rRow(ctx, claimableSQL, append(match, sql.Named("worker", p.WorkerID), sql.Named("request", reqID))...).Scan(&claimable); err != nil {
		return nil, fmt.Errorf("leasing for worker %s: looking for work: %w", p.WorkerID, err)
	}
	if !claimable {
		return nil, nil
	}
	var lease *api.Lease
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if p.RequestID != "" {
			o, err := s.scanFull(s.txRow(ctx, tx, `SELECT `+opCols+`, body, secrets FROM operations
				WHERE worker_id = ? AND lease_request_id = ? AND state IN ('leased', 'running') AND lease_expires_at >= ?`,
				p.WorkerID, p.RequestID, nanos(p.Now)))
			if err == nil {
				l := o.Lease()
				// The reply with the token minted then was lost: the token of this reply replaces it.
				var sealed []byte
				if err := s.txRow(ctx, tx, `UPDATE operations SET pod_token_hash = ? WHERE seq = ? RETURNING sealing_key`,
					nullString(p.PodTokenHash), o.Seq).Scan(&sealed); err != nil {
					return fmt.Errorf("replacing the pod token of request %s: %w", p.RequestID, err)
				}
				if l.SealingKey, err = s.openSealingKey(sealed); err != nil {
					return fmt.Errorf("lease of request %s: %w", p.RequestID, err)
				}
				lease = &l
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("looking up the lease of request %s: %w", p.RequestID, err)
			}
		}
		var err error
		lease, err = s.leaseRow(ctx, tx, claimSQL, p, match...)
		if err != nil {
			return fmt.Errorf("claiming: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("leasing for worker %s: %w", p.WorkerID, err)
	}
	return lease, nil
}

// sinceNanos is ClaimParams.HeartbeatSince as the guard compares it: the zero time lets any heartbeat pass.
func sinceNanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return nanos(t)
}

// leaseRow runs q (claimSQL or insertLeasedSQL), which leases at most one operation to p's worker with p's lease
// fields, and returns the lease; nil when q leased nothing. A deployment whose step it leased starts running.
func (s *Store) leaseRow(ctx context.Context, tx *sql.Tx, q string, p store.ClaimParams, args ...any) (*api.Lease, error) {
	var reqID sql.NullString
	if p.RequestID != "" {
		reqID = sql.NullString{String: p.RequestID, Valid: true}
	}
	sealKey, sealKid := s.sealSealingKey(p.SealingKey)
	args = append(args, sql.Named("worker", p.WorkerID), sql.Named("lease", p.LeaseID), sql.Named("request", reqID),
		sql.Named("expires", nanos(p.ExpiresAt)), sql.Named("now", nanos(p.Now)), sql.Named("since", sinceNanos(p.HeartbeatSince)),
		sql.Named("podtoken", nullString(p.PodTokenHash)), sql.Named("sealkey", sealKey), sql.Named("sealkid", sealKid), sql.Named("loglimit", max(p.LogLimit, 0)))
	o, err := s.scanFull(s.txRow(ctx, tx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if o.DeploymentID != "" {
		if _, err := s.txExec(ctx, tx, `UPDATE deployments SET state = 'running' WHERE id = ? AND state = 'queued'`,
			o.DeploymentID); err != nil {
			return nil, fmt.Errorf("starting deployment %s: %w", o.DeploymentID, err)
		}
	}
	l := o.Lease()
	l.SealingKey = p.SealingKey
	return &l, nil
}

// nullString stores "" as NULL.
func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }
