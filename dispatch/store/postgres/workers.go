package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// CreateWorker stores a newly registered worker.
func (s *Store) CreateWorker(ctx context.Context, w store.Worker) error {
	profiles, policy := store.EncodeOffer(w.Profiles, w.AllowOverrides)
	_, err := s.pool.Exec(ctx, `INSERT INTO workers (id, name, token_hash, token_id, pools, capabilities, version,
		capacity, running, healthy, health_message, draining, drain_requested, registered_at, last_heartbeat,
		profiles, allow_overrides)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		w.ID, w.Name, w.TokenHash, w.TokenID, store.EncodeList(w.Pools), store.EncodeList(w.Capabilities), w.Version,
		w.Capacity, w.Running, w.Healthy, w.HealthMessage, w.Draining, w.DrainRequested,
		nanos(w.RegisteredAt), nanos(w.LastHeartbeat), profiles, policy)
	if isUniqueViolation(err) {
		return fmt.Errorf("creating worker %s: %w", w.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating worker %s: %w", w.ID, err)
	}
	return nil
}

const workerCols = `id, name, token_hash, token_id, pools, capabilities, version, capacity, running, healthy,
	health_message, draining, drain_requested, registered_at, last_heartbeat, checks, last_check, profiles,
	allow_overrides`

func scanWorker(row pgx.Row) (store.Worker, error) {
	var w store.Worker
	var j store.WorkerJSON
	var registered, heartbeat int64
	var lastCheck *int64
	if err := row.Scan(&w.ID, &w.Name, &w.TokenHash, &w.TokenID, &j.Pools, &j.Capabilities, &w.Version, &w.Capacity,
		&w.Running, &w.Healthy, &w.HealthMessage, &w.Draining, &w.DrainRequested, &registered, &heartbeat, &j.Checks,
		&lastCheck, &j.Profiles, &j.Policy); err != nil {
		return w, err
	}
	if lastCheck != nil {
		w.LastCheck = fromNanos(*lastCheck)
	}
	w.RegisteredAt, w.LastHeartbeat = fromNanos(registered), fromNanos(heartbeat)
	return w, j.Decode(&w.Worker)
}

// WorkerByTokenHash returns the worker whose token hashes to hash.
func (s *Store) WorkerByTokenHash(ctx context.Context, hash []byte) (store.Worker, error) {
	w, err := scanWorker(s.pool.QueryRow(ctx, `SELECT `+workerCols+` FROM workers WHERE token_hash = $1`, hash))
	if err != nil {
		return w, readErr(err, "worker token")
	}
	return w, nil
}

// Worker returns one worker.
func (s *Store) Worker(ctx context.Context, id string) (store.Worker, error) {
	w, err := scanWorker(s.pool.QueryRow(ctx, `SELECT `+workerCols+` FROM workers WHERE id = $1`, id))
	if err != nil {
		return w, readErr(err, "worker %s", id)
	}
	return w, nil
}

func (s *Store) listWorkers(ctx context.Context, where string, args ...any) ([]store.Worker, error) {
	workers, err := queryAll(ctx, s.pool, []store.Worker{}, scanWorker,
		`SELECT `+workerCols+` FROM workers `+where+` ORDER BY registered_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing workers: %w", err)
	}
	return workers, nil
}

// ListWorkers returns every worker.
func (s *Store) ListWorkers(ctx context.Context) ([]store.Worker, error) {
	return s.listWorkers(ctx, "")
}

// PoolWorkers returns the workers registered into pool.
func (s *Store) PoolWorkers(ctx context.Context, pool string) ([]store.Worker, error) {
	return s.listWorkers(ctx, `WHERE pools::jsonb ? $1`, pool)
}

// SetDrain records an admin's drain request. The update takes the worker's row lock, which every lease
// to the worker takes first (lockWorker): a claim in flight either leased before the drain or sees it.
func (s *Store) SetDrain(ctx context.Context, workerID string, drain bool) (store.Worker, error) {
	w, err := scanWorker(s.pool.QueryRow(ctx, `UPDATE workers SET drain_requested = $1 WHERE id = $2 RETURNING `+workerCols,
		drain, workerID))
	if errors.Is(err, pgx.ErrNoRows) {
		return w, fmt.Errorf("worker %s: %w", workerID, store.ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("setting drain of worker %s: %w", workerID, err)
	}
	return w, nil
}

// RemoveWorker deletes a worker and, in the same transaction, makes the operations it holds lost. The DELETE
// waits for the worker's row lock, which a claim holds until it commits: the statements after it see every
// lease granted to the worker, and no claim after it finds the worker.
func (s *Store) RemoveWorker(ctx context.Context, id string, now time.Time) (store.RemovedWorker, error) {
	var out store.RemovedWorker
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = store.RemovedWorker{}
		w, err := scanWorker(tx.QueryRow(ctx, `DELETE FROM workers WHERE id = $1 RETURNING `+workerCols, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("worker %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("deleting the worker: %w", err)
		}
		out.Worker = w
		// The held operations are locked in seq order first, as everywhere several are locked, so this cannot
		// deadlock with an expiry or a heartbeat on the same operations.
		lost, err := scanOps(ctx, tx, false, `UPDATE operations SET state = 'lost',
				message = $1 || CASE WHEN cancel_requested THEN $2 ELSE '' END,
				finished_at = $3, secrets = NULL, pod_token_hash = NULL, sealing_key = NULL
			WHERE seq IN (SELECT seq FROM operations WHERE worker_id = $4 AND state IN ('leased', 'running')
				ORDER BY seq FOR UPDATE) RETURNING `+opCols,
			store.MessageWorkerRemoved(w.Name, w.ID), store.MessageCancelRequested, nanos(now), id)
		if err != nil {
			return fmt.Errorf("ending the worker's leases: %w", err)
		}
		sortBySeq(lost)
		// No one else may claim the operations targeted at it (its health checks): they end with it.
		ended, err := queryAll(ctx, tx, nil, scanID, `UPDATE operations SET state = 'cancelled', message = $1,
			finished_at = $2, secrets = NULL WHERE target_worker = $3 AND state = 'queued' RETURNING id`,
			store.MessageTargetRemoved(w.Name, w.ID), nanos(now), id)
		if err != nil {
			return fmt.Errorf("cancelling the operations targeted at the worker: %w", err)
		}
		out.Changes.Ended = ended
		for _, o := range lost {
			out.Lost = append(out.Lost, o.ID)
			out.Changes.Ended = append(out.Changes.Ended, o.ID)
			if o.DeploymentID != "" {
				if err := advance(ctx, tx, o, now, &out.Changes); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("removing worker %s: %w", id, err)
	}
	s.scrubAfter(out.Changes.Ended)
	return out, nil
}

// Heartbeat records a heartbeat and, through renewLeases, renews the listed leases the worker still holds and
// says what to cancel.
func (s *Store) Heartbeat(ctx context.Context, h store.Heartbeat) (store.HeartbeatReply, error) {
	var reply store.HeartbeatReply
	profiles, policy := store.EncodeOffer(h.Profiles, h.AllowOverrides)
	if h.Profiles != nil && profiles == nil {
		profiles = new(string)
		*profiles = "[]" // none, not "keep"
	}
	var lastCheck *int64
	if !h.Health.CheckedAt.IsZero() {
		n := nanos(h.Health.CheckedAt)
		lastCheck = &n
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE workers SET version = $1, capacity = $2, capabilities = $3, running = $4,
			healthy = $5, health_message = $6, draining = $7, last_heartbeat = $8, checks = $9, last_check = $10,
			profiles = COALESCE($11, profiles), allow_overrides = COALESCE($12, allow_overrides)
			WHERE id = $13 RETURNING drain_requested`,
			h.Version, h.Capacity, store.EncodeList(h.Capabilities), len(h.Running), h.Health.OK, h.Health.Message,
			h.Draining, nanos(h.Now), store.EncodeChecks(h.Health.Checks), lastCheck, profiles, policy, h.WorkerID).
			Scan(&reply.Drain)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("worker %s: %w", h.WorkerID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("updating worker: %w", err)
		}
		reply.Cancel, err = renewLeases(ctx, tx, h)
		return err
	})
	if err != nil {
		return reply, fmt.Errorf("recording heartbeat of worker %s: %w", h.WorkerID, err)
	}
	return reply, nil
}

// TouchWorkers records idle heartbeats in one statement (see store.Workers).
func (s *Store) TouchWorkers(ctx context.Context, touches []store.Touch) (map[string]bool, error) {
	drains := make(map[string]bool, len(touches))
	if len(touches) == 0 {
		return drains, nil
	}
	ids := make([]string, len(touches))
	prev, at, checks := make([]int64, len(touches)), make([]int64, len(touches)), make([]*int64, len(touches))
	for i, t := range touches {
		ids[i], prev[i], at[i] = t.WorkerID, nanos(t.Prev), nanos(t.At)
		if !t.LastCheck.IsZero() {
			checks[i] = new(int64)
			*checks[i] = nanos(t.LastCheck)
		}
	}
	rows, err := s.pool.Query(ctx, `UPDATE workers w SET last_heartbeat = t.at, last_check = t.chk
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS t (id, prev, at, chk)
		WHERE w.id = t.id AND w.last_heartbeat = t.prev RETURNING w.id, w.drain_requested`, ids, prev, at, checks)
	if err != nil {
		return nil, fmt.Errorf("touching %d workers: %w", len(touches), err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var drain bool
		if err := rows.Scan(&id, &drain); err != nil {
			return nil, fmt.Errorf("touching %d workers: %w", len(touches), err)
		}
		drains[id] = drain
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("touching %d workers: %w", len(touches), err)
	}
	return drains, nil
}
