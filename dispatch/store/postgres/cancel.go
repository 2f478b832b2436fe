package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Cancel cancels a queued operation at once or asks the worker of a live one to stop. The row is locked
// before its state is read, so a claim on another server either leased it first (then this asks its worker
// to stop) or skips it (SKIP LOCKED) and finds it cancelled.
func (s *Store) Cancel(ctx context.Context, id string, now time.Time) (api.Operation, store.Changes, error) {
	var out api.Operation
	var ch store.Changes
	err := s.tx(ctx, func(tx pgx.Tx) error {
		ch = store.Changes{}
		o, err := scanOp(tx.QueryRow(ctx, `SELECT `+opCols+` FROM operations WHERE id = $1 FOR UPDATE`, id), false)
		if err != nil {
			return readErr(err, "operation %s", id)
		}
		switch o.State {
		case api.StateQueued:
			o2, err := scanOp(tx.QueryRow(ctx, `UPDATE operations SET state = 'cancelled',
				message = $1, finished_at = $2, secrets = NULL WHERE seq = $3 RETURNING `+opCols,
				store.MessageCancelledBeforeStart, nanos(now), o.Seq), false)
			if err != nil {
				return fmt.Errorf("cancelling operation %s: %w", id, err)
			}
			out = o2.Operation
			ch.Ended = append(ch.Ended, id)
			if o.DeploymentID != "" {
				return advance(ctx, tx, o2, now, &ch)
			}
			return nil
		case api.StateLeased, api.StateRunning:
			o2, err := scanOp(tx.QueryRow(ctx, `UPDATE operations SET cancel_requested = TRUE WHERE seq = $1 RETURNING `+opCols,
				o.Seq), false)
			if err != nil {
				return fmt.Errorf("requesting cancellation of operation %s: %w", id, err)
			}
			out = o2.Operation
			return nil
		default:
			out = o.Operation
			return fmt.Errorf("operation %s %s: %w", id, o.State, store.ErrFinished)
		}
	})
	if err == nil {
		s.scrubAfter(ch.Ended)
	}
	return out, ch, err
}

// CancelDeployment cancels a deployment's queued steps and asks the worker of its live step to stop. It
// locks the steps first, in step order (as Finish and expiry do: a step, then the steps after it), so it
// waits for a step being finished or claimed and then sees the outcome.
func (s *Store) CancelDeployment(ctx context.Context, id string, now time.Time) (api.Deployment, store.Changes, error) {
	var ch store.Changes
	err := s.tx(ctx, func(tx pgx.Tx) error {
		ch = store.Changes{}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM operations WHERE deployment_id = $1 ORDER BY step FOR UPDATE`, id); err != nil {
			return fmt.Errorf("locking the steps of deployment %s: %w", id, err)
		}
		var state api.State
		if err := tx.QueryRow(ctx, `SELECT state FROM deployments WHERE id = $1`, id).Scan(&state); err != nil {
			return readErr(err, "deployment %s", id)
		}
		if state.Terminal() {
			return fmt.Errorf("deployment %s %s: %w", id, state, store.ErrFinished)
		}
		if err := cancelQueued(ctx, tx, id, 0, store.MessageDeploymentCancelled, now, &ch); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE operations SET cancel_requested = TRUE
			WHERE deployment_id = $1 AND state IN ('leased', 'running')`, id); err != nil {
			return fmt.Errorf("requesting cancellation of deployment %s: %w", id, err)
		}
		return settle(ctx, tx, id, now)
	})
	if err != nil {
		return api.Deployment{}, ch, err
	}
	s.scrubAfter(ch.Ended)
	d, err := s.Deployment(ctx, id)
	return d, ch, err
}
