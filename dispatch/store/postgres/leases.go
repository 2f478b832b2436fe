package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Leases returns the live leases a worker holds.
func (s *Store) Leases(ctx context.Context, workerID string, now time.Time) ([]api.Lease, error) {
	held, err := scanOps(ctx, s.pool, true, `SELECT `+opColsFull+` FROM operations
		WHERE worker_id = $1 AND state IN ('leased', 'running') AND lease_expires_at >= $2 ORDER BY seq`, workerID, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("listing leases of worker %s: %w", workerID, err)
	}
	leases := make([]api.Lease, 0, len(held))
	for _, o := range held {
		leases = append(leases, o.Lease())
	}
	return leases, nil
}

// held locks the operation ref names and checks that ref is its live lease. The row lock (held until the
// transaction ends) makes the check and the write after it one step: an expiry, a cancel or another call
// of the worker on the same operation waits for it, then sees what it wrote. For a terminal operation the
// row is returned along with a *store.LeaseLostError so that callers can recognise a replay.
func held(ctx context.Context, tx pgx.Tx, ref store.LeaseRef) (opRow, error) {
	o, err := scanOp(tx.QueryRow(ctx, `SELECT `+opCols+` FROM operations WHERE id = $1 FOR UPDATE`, ref.OperationID), false)
	if err != nil {
		return o, readErr(err, "operation %s", ref.OperationID)
	}
	return o, store.CheckLease(store.Held{ID: o.ID, State: o.State, WorkerID: o.WorkerID, LeaseID: o.LeaseID,
		LeaseExpiresAt: o.LeaseExpiresAt}, ref)
}

// renewLeases renews, for a heartbeat, the live leases of the operations it lists that its worker still holds,
// and lists what the worker must stop: live leases with a cancel request or already expired, and listed
// operations it does not hold live. A renewal racing an expiry: the UPDATE and the expiry's both re-check
// state and expiry on the row they lock, so whichever commits first wins and the other changes nothing.
func renewLeases(ctx context.Context, tx pgx.Tx, h store.Heartbeat) ([]string, error) {
	now := nanos(h.Now)
	running := h.Running
	if running == nil {
		running = []string{}
	}
	if len(running) > 0 {
		// Locked in seq order, as everywhere several operations are locked.
		if _, err := tx.Exec(ctx, `UPDATE operations SET lease_expires_at = $1
			WHERE seq IN (SELECT seq FROM operations WHERE worker_id = $2 AND state IN ('leased', 'running')
				AND lease_expires_at >= $3 AND id = ANY($4) ORDER BY seq FOR UPDATE)
			AND lease_expires_at >= $3`, nanos(h.LeaseExpiresAt), h.WorkerID, now, running); err != nil {
			return nil, fmt.Errorf("renewing leases: %w", err)
		}
	}
	cancel, err := queryAll(ctx, tx, nil, scanID, `SELECT id FROM (
		SELECT id FROM operations WHERE worker_id = $1 AND state IN ('leased', 'running')
			AND (cancel_requested OR lease_expires_at < $2)
		UNION
		SELECT r FROM unnest($3::text[]) r WHERE r NOT IN (
			SELECT id FROM operations WHERE worker_id = $1 AND state IN ('leased', 'running') AND lease_expires_at >= $2)
		) c ORDER BY id COLLATE "C"`, h.WorkerID, now, running)
	if err != nil {
		return nil, fmt.Errorf("listing operations to cancel: %w", err)
	}
	return cancel, nil
}

func sortBySeq(ops []opRow) {
	slices.SortFunc(ops, func(a, b opRow) int { return cmp.Compare(a.Seq, b.Seq) })
}
