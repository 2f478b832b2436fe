package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Leases returns the live leases a worker holds.
func (s *Store) Leases(ctx context.Context, workerID string, now time.Time) ([]api.Lease, error) {
	rows, err := s.rQuery(ctx, `SELECT `+opCols+`, body, secrets FROM operations
		WHERE worker_id = ? AND state IN ('leased', 'running') AND lease_expires_at >= ? ORDER BY seq`, workerID, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("listing leases of worker %s: %w", workerID, err)
	}
	held, err := s.scanFulls(rows)
	if err != nil {
		return nil, fmt.Errorf("listing leases of worker %s: %w", workerID, err)
	}
	leases := make([]api.Lease, 0, len(held))
	for _, o := range held {
		leases = append(leases, o.Lease())
	}
	return leases, nil
}

// held loads the operation ref names and checks that ref is its live lease. For a terminal operation the
// row is returned along with a *store.LeaseLostError so that callers can recognise a replay.
func (s *Store) held(ctx context.Context, tx *sql.Tx, ref store.LeaseRef) (opRow, error) {
	o, err := scanOp(s.txRow(ctx, tx, `SELECT `+opCols+` FROM operations WHERE id = ?`, ref.OperationID), false)
	if err != nil {
		return o, readErr(err, "operation %s", ref.OperationID)
	}
	return o, store.CheckLease(store.Held{ID: o.ID, State: o.State, WorkerID: o.WorkerID, LeaseID: o.LeaseID,
		LeaseExpiresAt: o.LeaseExpiresAt}, ref)
}

// renewLeases renews, for a heartbeat, the live leases of the operations it lists that its worker still holds,
// and lists what the worker must stop: live leases with a cancel request or already expired, and listed
// operations it does not hold live.
func (s *Store) renewLeases(ctx context.Context, tx *sql.Tx, h store.Heartbeat) ([]string, error) {
	running := store.EncodeList(h.Running)
	now := nanos(h.Now)
	if len(h.Running) > 0 {
		if _, err := s.txExec(ctx, tx, `UPDATE operations SET lease_expires_at = ?
			WHERE worker_id = ? AND state IN ('leased', 'running') AND lease_expires_at >= ?
			AND id IN (SELECT value FROM json_each(?))`, nanos(h.LeaseExpiresAt), h.WorkerID, now, running); err != nil {
			return nil, fmt.Errorf("renewing leases: %w", err)
		}
	}
	rows, err := s.txQuery(ctx, tx, `
		SELECT id FROM operations WHERE worker_id = ?1 AND state IN ('leased', 'running')
			AND (cancel_requested = 1 OR lease_expires_at < ?2)
		UNION
		SELECT r.value FROM json_each(?3) r WHERE r.value NOT IN (
			SELECT id FROM operations WHERE worker_id = ?1 AND state IN ('leased', 'running') AND lease_expires_at >= ?2)
		ORDER BY 1`, h.WorkerID, now, running)
	if err != nil {
		return nil, fmt.Errorf("listing operations to cancel: %w", err)
	}
	cancel, err := scanAll(rows, nil, scanID)
	if err != nil {
		return nil, fmt.Errorf("listing operations to cancel: %w", err)
	}
	return cancel, nil
}
