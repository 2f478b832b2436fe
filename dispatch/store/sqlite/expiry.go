package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// ExpireLeases marks operations whose lease expired as lost. Each update re-checks the lease id and the
// expiry, so a heartbeat that renewed the lease in between wins.
func (s *Store) ExpireLeases(ctx context.Context, now time.Time) (store.Changes, error) {
	var ch store.Changes
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := s.txQuery(ctx, tx, `SELECT `+opCols+` FROM operations INDEXED BY operations_worker
			WHERE state IN ('leased', 'running') AND lease_expires_at < ? ORDER BY seq`, nanos(now))
		if err != nil {
			return fmt.Errorf("finding expired leases: %w", err)
		}
		expired, err := scanOps(rows, false)
		if err != nil {
			return fmt.Errorf("finding expired leases: %w", err)
		}
		for _, o := range expired {
			msg := store.MessageExpired(o.WorkerID, o.LeaseExpiresAt, o.CancelRequested)
			o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET state = 'lost', message = ?, finished_at = ?,
				secrets = NULL, pod_token_hash = NULL, sealing_key = NULL WHERE seq = ? AND lease_id = ? AND state IN ('leased', 'running') AND lease_expires_at < ?
				RETURNING `+opCols, msg, nanos(now), o.Seq, o.LeaseID, nanos(now)), false)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("marking operation %s lost: %w", o.ID, err)
			}
			s.retireSoon()
			ch.Ended = append(ch.Ended, o.ID)
			if o.DeploymentID != "" {
				if err := s.advance(ctx, tx, o2, now, &ch); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return ch, fmt.Errorf("expiring leases: %w", err)
	}
	return ch, nil
}
