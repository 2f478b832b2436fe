package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// ExpireLeases marks operations whose lease expired as lost, each in its own short transaction (so an expiry
// holds one operation's lock at a time and cannot deadlock with a heartbeat or a removal that locks several).
// Each update re-checks the lease id, the state and the expiry on the row it locks: a heartbeat that renewed
// the lease first wins, and a second server expiring the same lease changes nothing (it reports nothing).
func (s *Store) ExpireLeases(ctx context.Context, now time.Time) (store.Changes, error) {
	var ch store.Changes
	expired, err := scanOps(ctx, s.pool, false, `SELECT `+opCols+` FROM operations
		WHERE state IN ('leased', 'running') AND lease_expires_at < $1 ORDER BY seq`, nanos(now))
	if err != nil {
		return ch, fmt.Errorf("expiring leases: finding expired leases: %w", err)
	}
	for _, o := range expired {
		var one store.Changes
		err := s.tx(ctx, func(tx pgx.Tx) error {
			one = store.Changes{}
			// The cancel request is read on the locked row: one may have come since the read above.
			msg := store.MessageExpired(o.WorkerID, o.LeaseExpiresAt, false)
			o2, err := scanOp(tx.QueryRow(ctx, `UPDATE operations SET state = 'lost',
				message = $1 || CASE WHEN cancel_requested THEN $5 ELSE '' END, finished_at = $2,
				secrets = NULL, pod_token_hash = NULL, sealing_key = NULL
				WHERE seq = $3 AND lease_id = $4 AND state IN ('leased', 'running') AND lease_expires_at < $2
				RETURNING `+opCols, msg, nanos(now), o.Seq, o.LeaseID, store.MessageCancelRequested), false)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("marking operation %s lost: %w", o.ID, err)
			}
			one.Ended = append(one.Ended, o.ID)
			if o.DeploymentID != "" {
				return advance(ctx, tx, o2, now, &one)
			}
			return nil
		})
		if err != nil {
			return ch, fmt.Errorf("expiring leases: %w", err)
		}
		ch.Ready = append(ch.Ready, one.Ready...)
		ch.Ended = append(ch.Ended, one.Ended...)
	}
	s.scrubAfter(ch.Ended)
	return ch, nil
}
