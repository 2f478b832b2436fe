package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// CreateWorker stores a newly registered worker.
func (s *Store) CreateWorker(ctx context.Context, w store.Worker) error {
	profiles, policy := store.EncodeOffer(w.Profiles, w.AllowOverrides)
	_, err := s.wExec(ctx, `INSERT INTO workers (id, name, token_hash, token_id, pools, capabilities, version,
		capacity, running, healthy, health_message, draining, drain_requested, registered_at, last_heartbeat,
		profiles, allow_overrides)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		w.ID, w.Name, w.TokenHash, w.TokenID, store.EncodeList(w.Pools), store.EncodeList(w.Capabilities), w.Version, w.Capacity, w.Running,
		boolInt(w.Healthy), w.HealthMessage, boolInt(w.Draining), boolInt(w.DrainRequested),
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

func scanWorker(row scanner) (store.Worker, error) {
	var w store.Worker
	var j store.WorkerJSON
	var healthy, draining, drainReq int
	var registered, heartbeat int64
	var lastCheck sql.NullInt64
	if err := row.Scan(&w.ID, &w.Name, &w.TokenHash, &w.TokenID, &j.Pools, &j.Capabilities, &w.Version, &w.Capacity,
		&w.Running, &healthy, &w.HealthMessage, &draining, &drainReq, &registered, &heartbeat, &j.Checks, &lastCheck,
		&j.Profiles, &j.Policy); err != nil {
		return w, err
	}
	if lastCheck.Valid {
		w.LastCheck = fromNanos(lastCheck.Int64)
	}
	w.Healthy, w.Draining, w.DrainRequested = healthy == 1, draining == 1, drainReq == 1
	w.RegisteredAt, w.LastHeartbeat = fromNanos(registered), fromNanos(heartbeat)
	return w, j.Decode(&w.Worker)
}

// WorkerByTokenHash returns the worker whose token hashes to hash.
func (s *Store) WorkerByTokenHash(ctx context.Context, hash []byte) (store.Worker, error) {
	w, err := scanWorker(s.rRow(ctx, `SELECT `+workerCols+` FROM workers WHERE token_hash = ?`, hash))
	if err != nil {
		return w, readErr(err, "worker token")
	}
	return w, nil
}

// Worker returns one worker.
func (s *Store) Worker(ctx context.Context, id string) (store.Worker, error) {
	w, err := scanWorker(s.rRow(ctx, `SELECT `+workerCols+` FROM workers WHERE id = ?`, id))
	if err != nil {
		return w, readErr(err, "worker %s", id)
	}
	return w, nil
}

func (s *Store) listWorkers(ctx context.Context, where string, args ...any) ([]store.Worker, error) {
	workers, err := readAll(ctx, s, []store.Worker{}, scanWorker, `SELECT `+workerCols+` FROM workers `+where+` ORDER BY registered_at, id`, args...)
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
	return s.listWorkers(ctx, `WHERE EXISTS (SELECT 1 FROM json_each(workers.pools) p WHERE p.value = ?)`, pool)
}

// SetDrain records an admin's drain request.
func (s *Store) SetDrain(ctx context.Context, workerID string, drain bool) (store.Worker, error) {
	var w store.Worker
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		w, err = scanWorker(s.txRow(ctx, tx, `UPDATE workers SET drain_requested = ? WHERE id = ? RETURNING `+workerCols,
			boolInt(drain), workerID))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return w, fmt.Errorf("worker %s: %w", workerID, store.ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("setting drain of worker %s: %w", workerID, err)
	}
	return w, nil
}

// RemoveWorker deletes a worker and, in the same transaction, makes the operations it holds lost.
func (s *Store) RemoveWorker(ctx context.Context, id string, now time.Time) (store.RemovedWorker, error) {
	var out store.RemovedWorker
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		w, err := scanWorker(s.txRow(ctx, tx, `DELETE FROM workers WHERE id = ? RETURNING `+workerCols, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("worker %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("deleting the worker: %w", err)
		}
		out.Worker = w
		msg := store.MessageWorkerRemoved(w.Name, w.ID)
		rows, err := s.txQuery(ctx, tx, `UPDATE operations SET state = 'lost',
			message = ? || CASE WHEN cancel_requested = 1 THEN ? ELSE '' END,
			finished_at = ?, secrets = NULL, pod_token_hash = NULL, sealing_key = NULL
			WHERE worker_id = ? AND state IN ('leased', 'running') RETURNING `+opCols, msg, store.MessageCancelRequested, nanos(now), id)
		if err != nil {
			return fmt.Errorf("ending the worker's leases: %w", err)
		}
		lost, err := scanOps(rows, false)
		if err != nil {
			return fmt.Errorf("ending the worker's leases: %w", err)
		}
		// RETURNING gives no order; the caller reports them oldest first.
		slices.SortFunc(lost, func(a, b opRow) int { return cmp.Compare(a.Seq, b.Seq) })
		// No one else may claim the operations targeted at it (its health checks): they end with it.
		rows, err = s.txQuery(ctx, tx, `UPDATE operations SET state = 'cancelled', message = ?, finished_at = ?,
			secrets = NULL WHERE target_worker = ? AND state = 'queued' RETURNING id`,
			store.MessageTargetRemoved(w.Name, w.ID), nanos(now), id)
		if err != nil {
			return fmt.Errorf("cancelling the operations targeted at the worker: %w", err)
		}
		for rows.Next() {
			var opID string
			if err := rows.Scan(&opID); err != nil {
				rows.Close()
				return fmt.Errorf("cancelling the operations targeted at the worker: %w", err)
			}
			out.Changes.Ended = append(out.Changes.Ended, opID)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("cancelling the operations targeted at the worker: %w", err)
		}
		for _, o := range lost {
			out.Lost = append(out.Lost, o.ID)
			out.Changes.Ended = append(out.Changes.Ended, o.ID)
			if o.DeploymentID != "" {
				if err := s.advance(ctx, tx, o, now, &out.Changes); err != nil {
					return err
				}
			}
		}
		if len(out.Changes.Ended) > 0 {
			s.retireSoon()
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("removing worker %s: %w", id, err)
	}
	return out, nil
}

// Heartbeat records a heartbeat and, through renewLeases, renews the listed leases the worker still holds and
// says what to cancel.
func (s *Store) Heartbeat(ctx context.Context, h store.Heartbeat) (store.HeartbeatReply, error) {
	var reply store.HeartbeatReply
	profiles, policy := store.EncodeOffer(h.Profiles, h.AllowOverrides)
	if h.Profiles != nil && profiles == nil {
		none := "[]" // none, not "keep"
		profiles = &none
	}
	now := nanos(h.Now)
	var lastCheck sql.NullInt64
	if !h.Health.CheckedAt.IsZero() {
		lastCheck = sql.NullInt64{Int64: nanos(h.Health.CheckedAt), Valid: true}
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var drain int
		err := s.txRow(ctx, tx, `UPDATE workers SET version = ?, capacity = ?, capabilities = ?, running = ?,
			healthy = ?, health_message = ?, draining = ?, last_heartbeat = ?, checks = ?, last_check = ?,
			profiles = COALESCE(?, profiles), allow_overrides = COALESCE(?, allow_overrides)
			WHERE id = ? RETURNING drain_requested`,
			h.Version, h.Capacity, store.EncodeList(h.Capabilities), len(h.Running), boolInt(h.Health.OK), h.Health.Message,
			boolInt(h.Draining), now, store.EncodeChecks(h.Health.Checks), lastCheck, profiles, policy, h.WorkerID).Scan(&drain)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("worker %s: %w", h.WorkerID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("updating worker: %w", err)
		}
		reply.Drain = drain == 1
		reply.Cancel, err = s.renewLeases(ctx, tx, h)
		return err
	})
	if err != nil {
		return reply, fmt.Errorf("recording heartbeat of worker %s: %w", h.WorkerID, err)
	}
	return reply, nil
}

// touchChunk bounds the touches of one write: the writer is single, and a submit handed to a waiting worker
// waits for the write before it (200 touches took 5 ms, under load more).
const touchChunk = 32

// TouchWorkers records idle heartbeats (see store.Workers), in one statement per touchChunk of them, each
// its own write.
func (s *Store) TouchWorkers(ctx context.Context, touches []store.Touch) (map[string]bool, error) {
	drains := make(map[string]bool, len(touches))
	for chunk := range slices.Chunk(touches, touchChunk) {
		if err := s.touchWorkers(ctx, chunk, drains); err != nil {
			return nil, fmt.Errorf("touching %d workers: %w", len(touches), err)
		}
	}
	return drains, nil
}

func (s *Store) touchWorkers(ctx context.Context, touches []store.Touch, drains map[string]bool) error {
	rows := make([][4]any, len(touches)) // [id, prev, at, last check or null]
	for i, t := range touches {
		rows[i] = [4]any{t.WorkerID, nanos(t.Prev), nanos(t.At), nil}
		if !t.LastCheck.IsZero() {
			rows[i][3] = nanos(t.LastCheck)
		}
	}
	arg, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	touched := map[string]bool{} // kept only once committed
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := s.txQuery(ctx, tx, `UPDATE workers SET last_heartbeat = t.at, last_check = t.chk
			FROM (SELECT value ->> 0 AS id, value ->> 1 AS prev, value ->> 2 AS at, value ->> 3 AS chk FROM json_each(?)) t
			WHERE workers.id = t.id AND workers.last_heartbeat = t.prev RETURNING workers.id, workers.drain_requested`, string(arg))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var drain int
			if err := rows.Scan(&id, &drain); err != nil {
				return err
			}
			touched[id] = drain == 1
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	maps.Copy(drains, touched)
	return nil
}
