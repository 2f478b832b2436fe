package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Cancel cancels a queued operation at once or asks the worker of a live one to stop.
func (s *Store) Cancel(ctx context.Context, id string, now time.Time) (api.Operation, store.Changes, error) {
	var out api.Operation
	var ch store.Changes
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := scanOp(s.txRow(ctx, tx, `SELECT `+opCols+` FROM operations WHERE id = ?`, id), false)
		if err != nil {
			return readErr(err, "operation %s", id)
		}
		switch o.State {
		case api.StateQueued:
			o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET state = 'cancelled',
				message = ?, finished_at = ?, secrets = NULL WHERE seq = ? RETURNING `+opCols,
				store.MessageCancelledBeforeStart, nanos(now), o.Seq), false)
			if err != nil {
				return fmt.Errorf("cancelling operation %s: %w", id, err)
			}
			s.retireSoon()
			out = o2.Operation
			ch.Ended = append(ch.Ended, id)
			if o.DeploymentID != "" {
				return s.advance(ctx, tx, o2, now, &ch)
			}
			return nil
		case api.StateLeased, api.StateRunning:
			o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET cancel_requested = 1 WHERE seq = ? RETURNING `+opCols,
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
	return out, ch, err
}

// CancelDeployment cancels a deployment's queued steps and asks the worker of its live step to stop.
func (s *Store) CancelDeployment(ctx context.Context, id string, now time.Time) (api.Deployment, store.Changes, error) {
	var ch store.Changes
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var state api.State
		err := s.txRow(ctx, tx, `SELECT state FROM deployments WHERE id = ?`, id).Scan(&state)
		if err != nil {
			return readErr(err, "deployment %s", id)
		}
		if state.Terminal() {
			return fmt.Errorf("deployment %s %s: %w", id, state, store.ErrFinished)
		}
		if err := s.cancelQueued(ctx, tx, id, 0, store.MessageDeploymentCancelled, now, &ch); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `UPDATE operations SET cancel_requested = 1
			WHERE deployment_id = ? AND state IN ('leased', 'running')`, id); err != nil {
			return fmt.Errorf("requesting cancellation of deployment %s: %w", id, err)
		}
		return s.settle(ctx, tx, id, now)
	})
	if err != nil {
		return api.Deployment{}, ch, err
	}
	d, err := s.Deployment(ctx, id)
	return d, ch, err
}
