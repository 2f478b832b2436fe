package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// SetRunning moves a leased operation to running.
func (s *Store) SetRunning(ctx context.Context, ref store.LeaseRef, message string) (api.Operation, error) {
	var out api.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		o, err := held(ctx, tx, ref)
		if err != nil {
			return err
		}
		o2, err := scanOp(tx.QueryRow(ctx, `UPDATE operations SET state = 'running',
			started_at = COALESCE(started_at, $1), message = CASE WHEN $2 = '' THEN message ELSE $2 END
			WHERE seq = $3 RETURNING `+opCols, nanos(ref.Now), message, o.Seq), false)
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

// Finish ends a leased operation; a replay of the same end is accepted and changes nothing. held locks the
// row, so the checks (the lease, the log's contiguous end against r.LastSeq) hold until the update commits:
// a log append or an expiry on another server waits for it.
func (s *Store) Finish(ctx context.Context, ref store.LeaseRef, r store.Result) (api.Operation, store.Changes, error) {
	var out api.Operation
	var ch store.Changes
	if err := store.CheckResult(ref.OperationID, r); err != nil {
		return out, ch, err
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		ch = store.Changes{}
		o, err := held(ctx, tx, ref)
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
		var exit *int64
		if r.ExitCode != nil {
			code := int64(*r.ExitCode)
			exit = &code
		}
		o2, err := scanOp(tx.QueryRow(ctx, `UPDATE operations SET state = $1, exit_code = $2, message = $3,
			finished_at = $4, secrets = NULL, pod_token_hash = NULL, sealing_key = NULL, usage = $5 WHERE seq = $6
			RETURNING `+opCols, r.State, exit, r.Message, nanos(ref.Now), store.EncodeUsage(r.Usage), o.Seq), false)
		if err != nil {
			return fmt.Errorf("updating operation %s: %w", o.ID, err)
		}
		out = o2.Operation
		ch.Ended = append(ch.Ended, o.ID)
		if o.DeploymentID != "" {
			return advance(ctx, tx, o2, ref.Now, &ch)
		}
		return nil
	})
	if err != nil {
		return out, ch, fmt.Errorf("finishing operation %s: %w", ref.OperationID, err)
	}
	s.scrubAfter(ch.Ended)
	return out, ch, nil
}
