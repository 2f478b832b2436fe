package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// ---- pools ----

// CreatePool stores a new pool.
func (s *Store) CreatePool(ctx context.Context, p api.Pool) error {
	_, err := s.wExec(ctx, `INSERT INTO pools (name, description, created_at) VALUES (?, ?, ?)`,
		p.Name, p.Description, nanos(p.CreatedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("creating pool %q: %w", p.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating pool %q: %w", p.Name, err)
	}
	return nil
}

// Pool returns one pool.
func (s *Store) Pool(ctx context.Context, name string) (api.Pool, error) {
	var p api.Pool
	var created int64
	err := s.rRow(ctx, `SELECT name, description, created_at FROM pools WHERE name = ?`, name).
		Scan(&p.Name, &p.Description, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("pool %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("reading pool %q: %w", name, err)
	}
	p.CreatedAt = fromNanos(created)
	return p, nil
}

// ListPools returns every pool ordered by name.
func (s *Store) ListPools(ctx context.Context) ([]api.Pool, error) {
	rows, err := s.rQuery(ctx, `SELECT name, description, created_at FROM pools ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing pools: %w", err)
	}
	defer rows.Close()
	pools := []api.Pool{}
	for rows.Next() {
		var p api.Pool
		var created int64
		if err := rows.Scan(&p.Name, &p.Description, &created); err != nil {
			return nil, fmt.Errorf("listing pools: %w", err)
		}
		p.CreatedAt = fromNanos(created)
		pools = append(pools, p)
	}
	return pools, rows.Err()
}

// ---- registration tokens ----

// CreateToken stores a registration token.
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	pools, err := json.Marshal(nonNil(t.Pools))
	if err != nil {
		return fmt.Errorf("encoding token pools: %w", err)
	}
	_, err = s.wExec(ctx, `INSERT INTO registration_tokens (id, hash, pools, created_at, expires_at, revoked_at)
		VALUES (?, ?, ?, ?, ?, ?)`, t.ID, t.Hash, string(pools), nanos(t.CreatedAt), nanos(t.ExpiresAt), nullNanos(t.RevokedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("creating token %s: %w", t.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating token %s: %w", t.ID, err)
	}
	return nil
}

const tokenCols = `id, hash, pools, created_at, expires_at, revoked_at`

func scanToken(row interface{ Scan(...any) error }) (store.Token, error) {
	var t store.Token
	var pools string
	var created, expires int64
	var revoked sql.NullInt64
	if err := row.Scan(&t.ID, &t.Hash, &pools, &created, &expires, &revoked); err != nil {
		return t, err
	}
	if err := json.Unmarshal([]byte(pools), &t.Pools); err != nil {
		return t, fmt.Errorf("decoding token pools: %w", err)
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt = fromNanos(created), fromNanos(expires), timePtr(revoked)
	return t, nil
}

// TokenByHash returns the token whose secret hashes to hash.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (store.Token, error) {
	t, err := scanToken(s.rRow(ctx, `SELECT `+tokenCols+` FROM registration_tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("registration token: %w", store.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("reading registration token: %w", err)
	}
	return t, nil
}

// ListTokens returns every token, newest first.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.rQuery(ctx, `SELECT `+tokenCols+` FROM registration_tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	defer rows.Close()
	tokens := []store.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("listing tokens: %w", err)
		}
		tokens = append(tokens, t)
	}
	return tokens, rows.Err()
}

// RevokeToken marks a token revoked; a second revoke keeps the first time.
func (s *Store) RevokeToken(ctx context.Context, id string, now time.Time) (store.Token, error) {
	var t store.Token
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		t, err = scanToken(s.txRow(ctx, tx, `UPDATE registration_tokens SET revoked_at = COALESCE(revoked_at, ?)
			WHERE id = ? RETURNING `+tokenCols, nanos(now), id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("token %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("revoking token %s: %w", id, err)
	}
	return t, nil
}

// ---- workers ----

// CreateWorker stores a newly registered worker.
func (s *Store) CreateWorker(ctx context.Context, w store.Worker) error {
	pools, _ := json.Marshal(nonNil(w.Pools))
	caps, _ := json.Marshal(nonNil(w.Capabilities))
	_, err := s.wExec(ctx, `INSERT INTO workers (id, name, token_hash, token_id, pools, capabilities, version,
		capacity, running, healthy, health_message, draining, drain_requested, registered_at, last_heartbeat)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		w.ID, w.Name, w.TokenHash, w.TokenID, string(pools), string(caps), w.Version, w.Capacity, w.Running,
		boolInt(w.Healthy), w.HealthMessage, boolInt(w.Draining), boolInt(w.DrainRequested),
		nanos(w.RegisteredAt), nanos(w.LastHeartbeat))
	if isUniqueViolation(err) {
		return fmt.Errorf("creating worker %s: %w", w.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating worker %s: %w", w.ID, err)
	}
	return nil
}

const workerCols = `id, name, token_hash, token_id, pools, capabilities, version, capacity, running, healthy,
	health_message, draining, drain_requested, registered_at, last_heartbeat`

func scanWorker(row interface{ Scan(...any) error }) (store.Worker, error) {
	var w store.Worker
	var pools, caps string
	var healthy, draining, drainReq int
	var registered, heartbeat int64
	if err := row.Scan(&w.ID, &w.Name, &w.TokenHash, &w.TokenID, &pools, &caps, &w.Version, &w.Capacity, &w.Running,
		&healthy, &w.HealthMessage, &draining, &drainReq, &registered, &heartbeat); err != nil {
		return w, err
	}
	if err := json.Unmarshal([]byte(pools), &w.Pools); err != nil {
		return w, fmt.Errorf("decoding worker pools: %w", err)
	}
	if err := json.Unmarshal([]byte(caps), &w.Capabilities); err != nil {
		return w, fmt.Errorf("decoding worker capabilities: %w", err)
	}
	w.Healthy, w.Draining, w.DrainRequested = healthy == 1, draining == 1, drainReq == 1
	w.RegisteredAt, w.LastHeartbeat = fromNanos(registered), fromNanos(heartbeat)
	return w, nil
}

// WorkerByTokenHash returns the worker whose token hashes to hash.
func (s *Store) WorkerByTokenHash(ctx context.Context, hash []byte) (store.Worker, error) {
	w, err := scanWorker(s.rRow(ctx, `SELECT `+workerCols+` FROM workers WHERE token_hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return w, fmt.Errorf("worker token: %w", store.ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("reading worker: %w", err)
	}
	return w, nil
}

func (s *Store) listWorkers(ctx context.Context, where string, args ...any) ([]store.Worker, error) {
	rows, err := s.rQuery(ctx, `SELECT `+workerCols+` FROM workers `+where+` ORDER BY registered_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing workers: %w", err)
	}
	defer rows.Close()
	workers := []store.Worker{}
	for rows.Next() {
		w, err := scanWorker(rows)
		if err != nil {
			return nil, fmt.Errorf("listing workers: %w", err)
		}
		workers = append(workers, w)
	}
	return workers, rows.Err()
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
		msg := fmt.Sprintf("lost: worker %s (%s) was removed while it held this operation; its result is unknown and it is not run again",
			w.Name, w.ID)
		rows, err := s.txQuery(ctx, tx, `UPDATE operations SET state = 'lost',
			message = ? || CASE WHEN cancel_requested = 1 THEN ' (a cancel had been requested)' ELSE '' END,
			finished_at = ?, secrets = NULL
			WHERE worker_id = ? AND state IN ('leased', 'running') RETURNING `+opCols, msg, nanos(now), id)
		if err != nil {
			return fmt.Errorf("ending the worker's leases: %w", err)
		}
		var lost []opRow
		for rows.Next() {
			o, err := scanOp(rows, false)
			if err != nil {
				rows.Close()
				return fmt.Errorf("ending the worker's leases: %w", err)
			}
			lost = append(lost, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ending the worker's leases: %w", err)
		}
		// RETURNING gives no order; the caller reports them oldest first.
		slices.SortFunc(lost, func(a, b opRow) int { return cmp.Compare(a.seq, b.seq) })
		for _, o := range lost {
			out.Lost = append(out.Lost, o.ID)
			out.Changes.Ended = append(out.Changes.Ended, o.ID)
			if o.DeploymentID != "" {
				if err := s.advance(ctx, tx, o, now, &out.Changes); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("removing worker %s: %w", id, err)
	}
	return out, nil
}

// Heartbeat records a heartbeat, renews the listed leases the worker still holds and says what to cancel.
func (s *Store) Heartbeat(ctx context.Context, h store.Heartbeat) (store.HeartbeatReply, error) {
	var reply store.HeartbeatReply
	caps, _ := json.Marshal(nonNil(h.Capabilities))
	running, _ := json.Marshal(nonNil(h.Running))
	now := nanos(h.Now)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var drain int
		err := s.txRow(ctx, tx, `UPDATE workers SET version = ?, capacity = ?, capabilities = ?, running = ?,
			healthy = ?, health_message = ?, draining = ?, last_heartbeat = ? WHERE id = ? RETURNING drain_requested`,
			h.Version, h.Capacity, string(caps), len(h.Running), boolInt(h.Health.OK), h.Health.Message,
			boolInt(h.Draining), now, h.WorkerID).Scan(&drain)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("worker %s: %w", h.WorkerID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("updating worker: %w", err)
		}
		reply.Drain = drain == 1
		if len(h.Running) > 0 {
			if _, err := s.txExec(ctx, tx, `UPDATE operations SET lease_expires_at = ?
				WHERE worker_id = ? AND state IN ('leased', 'running') AND lease_expires_at >= ?
				AND id IN (SELECT value FROM json_each(?))`, nanos(h.LeaseExpiresAt), h.WorkerID, now, string(running)); err != nil {
				return fmt.Errorf("renewing leases: %w", err)
			}
		}
		// Cancel: live leases with a cancel request or already expired, and listed operations not held live.
		rows, err := s.txQuery(ctx, tx, `
			SELECT id FROM operations WHERE worker_id = ?1 AND state IN ('leased', 'running')
				AND (cancel_requested = 1 OR lease_expires_at < ?2)
			UNION
			SELECT r.value FROM json_each(?3) r WHERE r.value NOT IN (
				SELECT id FROM operations WHERE worker_id = ?1 AND state IN ('leased', 'running') AND lease_expires_at >= ?2)
			ORDER BY 1`, h.WorkerID, now, string(running))
		if err != nil {
			return fmt.Errorf("listing operations to cancel: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("listing operations to cancel: %w", err)
			}
			reply.Cancel = append(reply.Cancel, id)
		}
		return rows.Err()
	})
	if err != nil {
		return reply, fmt.Errorf("recording heartbeat of worker %s: %w", h.WorkerID, err)
	}
	return reply, nil
}

// ---- settings and charts ----

// Setting returns a value or store.ErrNotFound.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.rRow(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("setting %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading setting %s: %w", key, err)
	}
	return v, nil
}

// SetSetting stores a value.
func (s *Store) SetSetting(ctx context.Context, key, value string) error {
	if _, err := s.wExec(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("storing setting %s: %w", key, err)
	}
	return nil
}

// PutChart stores or replaces the chart archive of a version.
func (s *Store) PutChart(ctx context.Context, c api.Chart, data []byte) error {
	if _, err := s.wExec(ctx, `INSERT INTO charts (version, sha256, size, data, uploaded_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (version) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, data = excluded.data,
		uploaded_at = excluded.uploaded_at`, c.Version, c.SHA256, len(data), data, nanos(c.UploadedAt)); err != nil {
		return fmt.Errorf("storing chart %s: %w", c.Version, err)
	}
	return nil
}

// Chart returns a chart archive.
func (s *Store) Chart(ctx context.Context, version string) (api.Chart, []byte, error) {
	var c api.Chart
	var data []byte
	var uploaded int64
	err := s.rRow(ctx, `SELECT version, sha256, size, data, uploaded_at FROM charts WHERE version = ?`, version).
		Scan(&c.Version, &c.SHA256, &c.Size, &data, &uploaded)
	if errors.Is(err, sql.ErrNoRows) {
		return c, nil, fmt.Errorf("chart %s: %w", version, store.ErrNotFound)
	}
	if err != nil {
		return c, nil, fmt.Errorf("reading chart %s: %w", version, err)
	}
	c.UploadedAt = fromNanos(uploaded)
	return c, data, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
