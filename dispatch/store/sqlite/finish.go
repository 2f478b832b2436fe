package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// SetRunning moves a leased operation to running.
func (s *Store) SetRunning(ctx context.Context, ref store.LeaseRef, message string) (api.Operation, error) {
	var out api.Operation
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := s.held(ctx, tx, ref)
		if err != nil {
			return err
		}
		o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET state = 'running',
			started_at = COALESCE(started_at, ?), message = CASE WHEN ? = '' THEN message ELSE ? END
			WHERE seq = ? RETURNING `+opCols, nanos(ref.Now), message, message, o.Seq), false)
		if err != nil {
			return fmt.Errorf("updating operation %s: %w", o.ID, err)
		}
		out = o2.Operation
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("marking operation %s running: %w", ref.OperationID, err)
	}
	return out, nil
}

// Finish ends a leased operation; a replay of the same end is accepted and changes nothing.
func (s *Store) Finish(ctx context.Context, ref store.LeaseRef, r store.Result) (api.Operation, store.Changes, error) {
	var out api.Operation
	var ch store.Changes
	if err := store.CheckResult(ref.OperationID, r); err != nil {
		return out, ch, err
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := s.held(ctx, tx, ref)
		if store.IsReplay(err, o.State, o.ExitCode, r) {
			out = o.Operation // a retried result: already done
			return nil
		}
		if err != nil {
			return err
		}
		if r.LastSeq > o.LastSeq {
			return &store.MissingLinesError{Have: o.LastSeq, Want: r.LastSeq}
		}
		var exit sql.NullInt64
		if r.ExitCode != nil {
			exit = sql.NullInt64{Int64: int64(*r.ExitCode), Valid: true}
		}
		o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET state = ?, exit_code = ?, message = ?,
			finished_at = ?, secrets = NULL, pod_token_hash = NULL, sealing_key = NULL, usage = ? WHERE seq = ? RETURNING `+opCols,
			r.State, exit, r.Message, nanos(ref.Now), store.EncodeUsage(r.Usage), o.Seq), false)
		if err != nil {
			return fmt.Errorf("updating operation %s: %w", o.ID, err)
		}
		s.retireSoon()
		out = o2.Operation
		ch.Ended = append(ch.Ended, o.ID)
		if o.DeploymentID != "" {
			return s.advance(ctx, tx, o2, ref.Now, &ch)
		}
		return nil
	})
	if err != nil {
		return out, ch, fmt.Errorf("finishing operation %s: %w", ref.OperationID, err)
	}
	return out, ch, nil
}
