package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// CreateDeployment enqueues a deployment; only its first step is claimable.
func (s *Store) CreateDeployment(ctx context.Context, d store.NewDeployment) (api.Deployment, error) {
	out := api.Deployment{ID: d.ID, Name: d.Name, State: api.StateQueued, CreatedAt: d.CreatedAt.UTC()}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := s.txExec(ctx, tx, `INSERT INTO deployments (id, name, state, created_at) VALUES (?, ?, 'queued', ?)`,
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
			op, err := s.insertOperation(ctx, tx, step, d.ID, i+1, i == 0, message)
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

// advance moves a deployment on after its step o ended: the next step becomes claimable when o succeeded;
// otherwise the queued steps after it are cancelled. Then the deployment's state is settled.
func (s *Store) advance(ctx context.Context, tx *sql.Tx, o opRow, now time.Time, ch *store.Changes) error {
	if o.State == api.StateSucceeded {
		var r store.Ready
		var caps *string
		err := s.txRow(ctx, tx, `UPDATE operations SET ready = 1, message = ''
			WHERE deployment_id = ? AND step = ? AND state = 'queued' RETURNING id, pool, capabilities, COALESCE(profile, '')`,
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
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("readying step %d of deployment %s: %w", o.Step+1, o.DeploymentID, err)
		}
	} else {
		reason := store.MessageNotRun(o.Step, o.Name, o.State)
		if err := s.cancelQueued(ctx, tx, o.DeploymentID, o.Step, reason, now, ch); err != nil {
			return err
		}
	}
	return s.settle(ctx, tx, o.DeploymentID, now)
}

// cancelQueued cancels a deployment's queued steps after step.
func (s *Store) cancelQueued(ctx context.Context, tx *sql.Tx, depID string, step int, reason string, now time.Time, ch *store.Changes) error {
	rows, err := s.txQuery(ctx, tx, `UPDATE operations SET state = 'cancelled', message = ?, finished_at = ?, secrets = NULL
		WHERE deployment_id = ? AND step > ? AND state = 'queued' RETURNING id`, reason, nanos(now), depID, step)
	if err != nil {
		return fmt.Errorf("cancelling the rest of deployment %s: %w", depID, err)
	}
	ids, err := scanAll(rows, nil, scanID)
	if err != nil {
		return fmt.Errorf("cancelling the rest of deployment %s: %w", depID, err)
	}
	if len(ids) > 0 {
		s.retireSoon()
	}
	ch.Ended = append(ch.Ended, ids...)
	return nil
}

// settle derives a deployment's state from its steps.
func (s *Store) settle(ctx context.Context, tx *sql.Tx, depID string, now time.Time) error {
	rows, err := s.txQuery(ctx, tx, `SELECT state, COUNT(*) FROM operations WHERE deployment_id = ? GROUP BY state`, depID)
	if err != nil {
		return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
	}
	counts := map[api.State]int{}
	for rows.Next() {
		var st api.State
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
		}
		counts[st] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
	}
	state := store.DeploymentState(counts)
	var finished sql.NullInt64
	if state.Terminal() {
		finished = sql.NullInt64{Int64: nanos(now), Valid: true}
	}
	if _, err := s.txExec(ctx, tx, `UPDATE deployments SET state = ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?`,
		state, finished, depID); err != nil {
		return fmt.Errorf("updating deployment %s: %w", depID, err)
	}
	return nil
}

// Deployment returns one deployment with summaries of its steps.
func (s *Store) Deployment(ctx context.Context, id string) (api.Deployment, error) {
	var d api.Deployment
	var created int64
	err := s.rRow(ctx, `SELECT id, name, state, created_at FROM deployments WHERE id = ?`, id).
		Scan(&d.ID, &d.Name, &d.State, &created)
	if err != nil {
		return d, readErr(err, "deployment %s", id)
	}
	d.CreatedAt = fromNanos(created)
	d.Operations, err = s.queryOps(ctx, `SELECT `+opCols+` FROM operations WHERE deployment_id = ? ORDER BY step`, id)
	return d, err
}

// ListDeployments returns deployments, newest first, with summaries of their steps.
func (s *Store) ListDeployments(ctx context.Context, limit int) ([]api.Deployment, error) {
	if limit <= 0 {
		limit = 100
	}
	ids, err := readAll(ctx, s, nil, scanID, `SELECT id FROM deployments ORDER BY created_at DESC, id DESC LIMIT ?`, limit)
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
