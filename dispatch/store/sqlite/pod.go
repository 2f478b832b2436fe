package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// PodLease returns the lease of the leased or running operation whose pod token hashes to tokenHash.
func (s *Store) PodLease(ctx context.Context, tokenHash string) (store.PodLease, error) {
	var pl store.PodLease
	var expires, eosSeq, exit sql.NullInt64
	var sealed []byte
	err := s.rRow(ctx, `SELECT id, lease_id, worker_id, lease_expires_at, sealing_key, last_seq, pod_eos_seq, pod_exit_code
		FROM operations WHERE pod_token_hash = ? AND state IN ('leased', 'running')`, tokenHash).
		Scan(&pl.OperationID, &pl.LeaseID, &pl.WorkerID, &expires, &sealed, &pl.LastSeq, &eosSeq, &exit)
	if err != nil {
		return pl, readErr(err, "pod token")
	}
	if pl.SealingKey, err = s.openSealingKey(sealed); err != nil {
		return pl, fmt.Errorf("operation %s: %w", pl.OperationID, err)
	}
	pl.ExpiresAt = fromNanos(expires.Int64)
	pl.End = podEnd(eosSeq, exit)
	return pl, nil
}

func podEnd(seq, exit sql.NullInt64) *api.PodEnd {
	if !seq.Valid || !exit.Valid {
		return nil
	}
	return &api.PodEnd{Seq: seq.Int64, ExitCode: int(exit.Int64)}
}

// SetPodEnd records the pod's end-of-stream marker on a leased operation; the first one stays.
func (s *Store) SetPodEnd(ctx context.Context, ref store.LeaseRef, end api.PodEnd) error {
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := s.held(ctx, tx, ref)
		if err != nil {
			return err
		}
		_, err = s.txExec(ctx, tx, `UPDATE operations SET pod_eos_seq = ?, pod_exit_code = ? WHERE seq = ? AND pod_eos_seq IS NULL`,
			end.Seq, end.ExitCode, o.Seq)
		return err
	})
	if err != nil {
		return fmt.Errorf("recording the pod's end of operation %s: %w", ref.OperationID, err)
	}
	return nil
}

// PodEnd returns the marker SetPodEnd recorded, or nil.
func (s *Store) PodEnd(ctx context.Context, id string) (*api.PodEnd, error) {
	var seq, exit sql.NullInt64
	if err := s.rRow(ctx, `SELECT pod_eos_seq, pod_exit_code FROM operations WHERE id = ?`, id).Scan(&seq, &exit); err != nil {
		return nil, readErr(err, "operation %s", id)
	}
	return podEnd(seq, exit), nil
}
