package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// PodLease returns the lease of the leased or running operation whose pod token hashes to tokenHash.
func (s *Store) PodLease(ctx context.Context, tokenHash string) (store.PodLease, error) {
	var pl store.PodLease
	var expires, eosSeq, exit *int64
	err := s.pool.QueryRow(ctx, `SELECT id, lease_id, worker_id, lease_expires_at, sealing_key, last_seq, pod_eos_seq, pod_exit_code
		FROM operations WHERE pod_token_hash = $1 AND state IN ('leased', 'running')`, tokenHash).
		Scan(&pl.OperationID, &pl.LeaseID, &pl.WorkerID, &expires, &pl.SealingKey, &pl.LastSeq, &eosSeq, &exit)
	if err != nil {
		return pl, readErr(err, "pod token")
	}
	if expires != nil {
		pl.ExpiresAt = fromNanos(*expires)
	}
	pl.End = podEnd(eosSeq, exit)
	return pl, nil
}

func podEnd(seq, exit *int64) *api.PodEnd {
	if seq == nil || exit == nil {
		return nil
	}
	return &api.PodEnd{Seq: *seq, ExitCode: int(*exit)}
}

// SetPodEnd records the pod's end-of-stream marker on a leased operation; the first one stays.
func (s *Store) SetPodEnd(ctx context.Context, ref store.LeaseRef, end api.PodEnd) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		o, err := lockLog(ctx, tx, ref)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE operations SET pod_eos_seq = $1, pod_exit_code = $2 WHERE seq = $3 AND pod_eos_seq IS NULL`,
			end.Seq, end.ExitCode, o.seq)
		return err
	})
	if err != nil {
		return fmt.Errorf("recording the pod's end of operation %s: %w", ref.OperationID, err)
	}
	return nil
}

// PodEnd returns the marker SetPodEnd recorded, or nil.
func (s *Store) PodEnd(ctx context.Context, id string) (*api.PodEnd, error) {
	var seq, exit *int64
	err := s.pool.QueryRow(ctx, `SELECT pod_eos_seq, pod_exit_code FROM operations WHERE id = $1`, id).Scan(&seq, &exit)
	if err != nil {
		return nil, readErr(err, "operation %s", id)
	}
	return podEnd(seq, exit), nil
}
