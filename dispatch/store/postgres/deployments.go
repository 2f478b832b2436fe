package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// CreateDeployment enqueues a deployment; only its first step is claimable.
func (s *Store) CreateDeployment(ctx context.Context, d store.NewDeployment) (api.Deployment, error) {
	var out api.Deployment
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = api.Deployment{ID: d.ID, Name: d.Name, State: api.StateQueued, CreatedAt: d.CreatedAt.UTC()}
		if _, err := tx.Exec(ctx, `INSERT INTO deployments (id, name, state, created_at) VALUES ($1, $2, 'queued', $3)`,
			d.ID, d.Name, nanos(d.CreatedAt)); err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("deployment %s: %w", d.ID, store.ErrExists)
			}
			return fmt.Errorf("inserting deployment %s: %w", d.ID, err)
		}
		for i, step := range d.Steps {
			message := ""
			if i > 0 {
				message = store.MessageWaitsFor(i + 1)
			}
			op, err := insertOperation(ctx, tx, step, d.ID, i+1, i == 0, message)
			if err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
			op.Script, op.Files, op.Variables = "", nil, nil
			out.Operations = append(out.Operations, op)
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("enqueueing deployment: %w", err)
	}
	return out, nil
}

// advance moves a deployment on after its step o ended (o's row is locked by the caller): the next step
// becomes claimable when o succeeded; otherwise the queued steps after it are cancelled. Then the
// deployment's state is settled. Steps are locked in step order, and the deployment's row last, everywhere
// (see CancelDeployment), so two servers ending steps of one deployment take turns instead of deadlocking.
func advance(ctx context.Context, tx pgx.Tx, o opRow, now time.Time, ch *store.Changes) error {
	if o.State == api.StateSucceeded {
		var r store.Ready
		var caps *string
		err := tx.QueryRow(ctx, `UPDATE operations SET ready = TRUE, message = ''
			WHERE deployment_id = $1 AND step = $2 AND state = 'queued' RETURNING id, pool, capabilities, COALESCE(profile, '')`,
			o.DeploymentID, o.Step+1).Scan(&r.ID, &r.Pool, &caps, &r.Profile)
		switch {
		case err == nil:
			j := store.OpJSON{Capabilities: caps}
			var next api.Operation
			if err := j.Decode(&next); err != nil {
				return err
			}
			r.Capabilities = next.Capabilities
			ch.Ready = append(ch.Ready, r)
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("readying step %d of deployment %s: %w", o.Step+1, o.DeploymentID, err)
		}
	} else {
		reason := store.MessageNotRun(o.Step, o.Name, o.State)
		if err := cancelQueued(ctx, tx, o.DeploymentID, o.Step, reason, now, ch); err != nil {
			return err
		}
	}
	return settle(ctx, tx, o.DeploymentID, now)
}

// cancelQueued cancels a deployment's queued steps after step, locking them in step order.
func cancelQueued(ctx context.Context, tx pgx.Tx, depID string, step int, reason string, now time.Time, ch *store.Changes) error {
	ids, err := queryAll(ctx, tx, nil, scanID, `UPDATE operations SET state = 'cancelled', message = $1, finished_at = $2,
		secrets = NULL WHERE seq IN (SELECT seq FROM operations WHERE deployment_id = $3 AND step > $4 AND state = 'queued'
			ORDER BY step FOR UPDATE)
		AND state = 'queued' RETURNING id`, reason, nanos(now), depID, step)
	if err != nil {
		return fmt.Errorf("cancelling the rest of deployment %s: %w", depID, err)
	}
	ch.Ended = append(ch.Ended, ids...)
	return nil
}

// settle derives a deployment's state from its steps.
func settle(ctx context.Context, tx pgx.Tx, depID string, now time.Time) error {
	rows, err := tx.Query(ctx, `SELECT state, count(*) FROM operations WHERE deployment_id = $1 GROUP BY state`, depID)
	if err != nil {
		return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
	}
	counts := map[api.State]int{}
	var st api.State
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&st, &n}, func() error { counts[st] = n; return nil }); err != nil {
		return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
	}
	state := store.DeploymentState(counts)
	var finished *int64
	if state.Terminal() {
		finished = nullNanos(&now)
	}
	if _, err := tx.Exec(ctx, `UPDATE deployments SET state = $1, finished_at = COALESCE(finished_at, $2) WHERE id = $3`,
		state, finished, depID); err != nil {
		return fmt.Errorf("updating deployment %s: %w", depID, err)
	}
	return nil
}

// Deployment returns one deployment with summaries of its steps.
func (s *Store) Deployment(ctx context.Context, id string) (api.Deployment, error) {
	var d api.Deployment
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT id, name, state, created_at FROM deployments WHERE id = $1`, id).
		Scan(&d.ID, &d.Name, &d.State, &created)
	if err != nil {
		return d, readErr(err, "deployment %s", id)
	}
	d.CreatedAt = fromNanos(created)
	d.Operations, err = s.queryOps(ctx, `SELECT `+opCols+` FROM operations WHERE deployment_id = $1 ORDER BY step`, id)
	return d, err
}

// ListDeployments returns deployments, newest first, with summaries of their steps.
func (s *Store) ListDeployments(ctx context.Context, limit int) ([]api.Deployment, error) {
	if limit <= 0 {
		limit = 100
	}
	ids, err := queryAll(ctx, s.pool, nil, scanID, `SELECT id FROM deployments ORDER BY created_at DESC, id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("listing deployments: %w", err)
	}
	deps := []api.Deployment{}
	for _, id := range ids {
		d, err := s.Deployment(ctx, id)
		if err != nil {
			return nil, err
		}
		deps = append(deps, d)
	}
	return deps, nil
}
