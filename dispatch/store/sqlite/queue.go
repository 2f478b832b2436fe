package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// opBody is the part of a spec kept in the body column: what the worker needs and a list leaves out.
type opBody struct {
	Script    string         `json:"script"`
	Files     []api.File     `json:"files,omitempty"`
	Variables []api.Variable `json:"variables,omitempty"` // sensitive values replaced by mask.Placeholder
}

// opRow is an operation row with the columns api.Operation does not show.
type opRow struct {
	api.Operation
	seq            int64
	leaseID        string
	leaseExpiresAt time.Time
	lastSeq        int64
	secrets        map[int]string // variable index -> sensitive value
}

const opCols = `seq, id, COALESCE(deployment_id, ''), step, name, pool, syntax, image, requests, timeout_seconds,
	capabilities, state, exit_code, message, COALESCE(worker_id, ''), cancel_requested, COALESCE(lease_id, ''),
	lease_expires_at, last_seq, created_at, started_at, finished_at`

// scanOp reads opCols, followed by body and secrets when full is set.
func scanOp(row interface{ Scan(...any) error }, full bool) (opRow, error) {
	var o opRow
	var requests, caps, body, secrets sql.NullString
	var exit, expires, started, finished sql.NullInt64
	var cancel int
	var created int64
	dest := []any{&o.seq, &o.ID, &o.DeploymentID, &o.Step, &o.Name, &o.Pool, &o.Syntax, &o.Image, &requests,
		&o.TimeoutSeconds, &caps, &o.State, &exit, &o.Message, &o.WorkerID, &cancel, &o.leaseID, &expires, &o.lastSeq,
		&created, &started, &finished}
	if full {
		dest = append(dest, &body, &secrets)
	}
	if err := row.Scan(dest...); err != nil {
		return o, err
	}
	if requests.Valid {
		o.Requests = new(api.Resources)
		if err := json.Unmarshal([]byte(requests.String), o.Requests); err != nil {
			return o, fmt.Errorf("decoding requests of %s: %w", o.ID, err)
		}
	}
	if caps.Valid {
		if err := json.Unmarshal([]byte(caps.String), &o.Capabilities); err != nil {
			return o, fmt.Errorf("decoding capabilities of %s: %w", o.ID, err)
		}
	}
	if exit.Valid {
		code := int(exit.Int64)
		o.ExitCode = &code
	}
	o.CancelRequested = cancel == 1
	if expires.Valid {
		o.leaseExpiresAt = fromNanos(expires.Int64)
	}
	o.CreatedAt, o.StartedAt, o.FinishedAt = fromNanos(created), timePtr(started), timePtr(finished)
	if body.Valid {
		var b opBody
		if err := json.Unmarshal([]byte(body.String), &b); err != nil {
			return o, fmt.Errorf("decoding body of %s: %w", o.ID, err)
		}
		o.Script, o.Files, o.Variables = b.Script, b.Files, b.Variables
	}
	if secrets.Valid {
		if err := json.Unmarshal([]byte(secrets.String), &o.secrets); err != nil {
			return o, fmt.Errorf("decoding sensitive values of %s: %w", o.ID, err)
		}
	}
	return o, nil
}

// unmasked returns the operation with its sensitive values in clear (for a lease).
func (o opRow) unmasked() api.Operation {
	op := o.Operation
	if len(o.secrets) > 0 {
		op.Variables = append([]api.Variable(nil), op.Variables...)
		for i, v := range o.secrets {
			if i >= 0 && i < len(op.Variables) {
				op.Variables[i].Value = v
			}
		}
	}
	return op
}

func (o opRow) lease() api.Lease {
	return api.Lease{LeaseID: o.leaseID, ExpiresAt: o.leaseExpiresAt, LastSeq: o.lastSeq, Operation: o.unmasked()}
}

// ---- enqueueing ----

// insertOperation inserts a queued operation, or one leased already when claim is set.
func (s *Store) insertOperation(ctx context.Context, tx *sql.Tx, op store.NewOperation, depID string, step int, ready bool, message string, claim *store.ClaimParams) (api.Operation, error) {
	spec := op.Spec
	var exists int
	if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM pools WHERE name = ?`, spec.Pool).Scan(&exists); err != nil {
		return api.Operation{}, fmt.Errorf("checking pool %q: %w", spec.Pool, err)
	}
	if exists == 0 {
		return api.Operation{}, fmt.Errorf("pool %q: %w", spec.Pool, store.ErrNotFound)
	}
	body := opBody{Script: spec.Script, Files: spec.Files}
	secrets := map[int]string{}
	for i, v := range spec.Variables {
		if v.Sensitive {
			secrets[i] = v.Value
			v.Value = mask.Placeholder
		}
		body.Variables = append(body.Variables, v)
	}
	bodyJSON, err := json.Marshal(body)
	if err != nil {
		return api.Operation{}, fmt.Errorf("encoding operation body: %w", err)
	}
	var secretsJSON, requestsJSON, capsJSON sql.NullString
	if len(secrets) > 0 {
		b, _ := json.Marshal(secrets)
		secretsJSON = sql.NullString{String: string(b), Valid: true}
	}
	if spec.Requests != nil {
		b, _ := json.Marshal(spec.Requests)
		requestsJSON = sql.NullString{String: string(b), Valid: true}
	}
	if len(spec.Capabilities) > 0 {
		b, _ := json.Marshal(spec.Capabilities)
		capsJSON = sql.NullString{String: string(b), Valid: true}
	}
	var dep sql.NullString
	if depID != "" {
		dep = sql.NullString{String: depID, Valid: true}
	}
	state := api.StateQueued
	var worker, leaseID, reqID sql.NullString
	var expires, leased sql.NullInt64
	if claim != nil {
		state = api.StateLeased
		worker = sql.NullString{String: claim.WorkerID, Valid: true}
		leaseID = sql.NullString{String: claim.LeaseID, Valid: true}
		reqID = sql.NullString{String: claim.RequestID, Valid: claim.RequestID != ""}
		expires = sql.NullInt64{Int64: nanos(claim.ExpiresAt), Valid: true}
		leased = sql.NullInt64{Int64: nanos(claim.Now), Valid: true}
	}
	if _, err := s.txExec(ctx, tx, `INSERT INTO operations (id, deployment_id, step, name, pool, syntax, image, requests,
		timeout_seconds, capabilities, body, secrets, ready, state, message, created_at,
		worker_id, lease_id, lease_request_id, lease_expires_at, leased_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		op.ID, dep, step, spec.Name, spec.Pool, spec.Syntax, spec.Image, requestsJSON, spec.TimeoutSeconds, capsJSON,
		string(bodyJSON), secretsJSON, boolInt(ready), state, message, nanos(op.CreatedAt),
		worker, leaseID, reqID, expires, leased); err != nil {
		if isUniqueViolation(err) {
			return api.Operation{}, fmt.Errorf("operation %s: %w", op.ID, store.ErrExists)
		}
		return api.Operation{}, fmt.Errorf("inserting operation %s: %w", op.ID, err)
	}
	out := api.Operation{ID: op.ID, DeploymentID: depID, Step: step, OperationSpec: spec, State: state,
		Message: message, CreatedAt: op.CreatedAt.UTC(), WorkerID: worker.String}
	out.Variables = body.Variables
	return out, nil
}

// CreateOperation enqueues one operation.
func (s *Store) CreateOperation(ctx context.Context, op store.NewOperation) (api.Operation, error) {
	var out api.Operation
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		out, err = s.insertOperation(ctx, tx, op, "", 0, true, "", nil)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("enqueueing operation: %w", err)
	}
	return out, nil
}

// CreateLeasedOperation enqueues an operation already leased to a waiting worker; nil when the worker no
// longer exists.
func (s *Store) CreateLeasedOperation(ctx context.Context, op store.NewOperation, p store.ClaimParams) (*api.Lease, error) {
	var out api.Operation
	gone := false
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := s.txRow(ctx, tx, `SELECT COUNT(*) FROM workers WHERE id = ?`, p.WorkerID).Scan(&n); err != nil {
			return fmt.Errorf("checking worker %s: %w", p.WorkerID, err)
		}
		if gone = n == 0; gone {
			return nil
		}
		var err error
		out, err = s.insertOperation(ctx, tx, op, "", 0, true, "", &p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("enqueueing operation leased to worker %s: %w", p.WorkerID, err)
	}
	if gone {
		return nil, nil
	}
	out.Variables = op.Spec.Variables // the worker gets the values in clear
	return &api.Lease{LeaseID: p.LeaseID, ExpiresAt: p.ExpiresAt.UTC(), Operation: out}, nil
}

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
				message = fmt.Sprintf("waits for step %d", i)
			}
			op, err := s.insertOperation(ctx, tx, step, d.ID, i+1, i == 0, message, nil)
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

// ---- leasing ----

// claimPick selects the oldest claimable operation of the worker's pools (@pools, a JSON array) whose
// required capabilities are all among the worker's (@caps). Per pool it walks the queue index in order and
// stops at the first operation the worker can take, so a claim costs the same with 10 or 100,000 operations
// queued. INDEXED BY makes SQLite fail the statement rather than fall back to a scan if the index ever stops
// fitting it.
const claimPick = `SELECT MIN(first) FROM (
		SELECT (
			SELECT o.seq FROM operations o INDEXED BY operations_queue
			WHERE o.pool = p.value AND o.state = 'queued' AND o.ready = 1
			AND (o.capabilities IS NULL OR NOT EXISTS (
				SELECT 1 FROM json_each(o.capabilities) r WHERE r.value NOT IN (SELECT value FROM json_each(@caps))))
			ORDER BY o.seq LIMIT 1) AS first
		FROM json_each(@pools) p)`

// claimSQL picks and leases in one statement, to a worker that exists (a removed worker's long-poll still in
// flight gets nothing).
const claimSQL = `UPDATE operations SET state = 'leased', worker_id = @worker, lease_id = @lease,
	lease_request_id = @request, lease_expires_at = @expires, leased_at = @now
	WHERE seq = (` + claimPick + `) AND EXISTS (SELECT 1 FROM workers WHERE id = @worker)
	RETURNING ` + opCols + `, body, secrets`

// claimableSQL answers, on a reader, whether a claim would find anything: an operation to pick, or a live
// lease already granted for the request id. Most long-polls start with nothing to claim; this keeps them off
// the single writer.
const claimableSQL = `SELECT (` + claimPick + `) IS NOT NULL OR EXISTS (
	SELECT 1 FROM operations WHERE worker_id = @worker AND lease_request_id = @request AND state IN ('leased', 'running'))`

// Claim leases the oldest claimable operation the worker can take. The pick and the lease are one UPDATE.
func (s *Store) Claim(ctx context.Context, p store.ClaimParams) (*api.Lease, error) {
	pools, _ := json.Marshal(nonNil(p.Pools))
	caps, _ := json.Marshal(nonNil(p.Capabilities))
	var reqID sql.NullString
	if p.RequestID != "" {
		reqID = sql.NullString{String: p.RequestID, Valid: true}
	}
	// A reader sees every commit made before it starts, so "nothing" here is as good as the write's answer
	// would have been at this moment; the caller waits for a wake-up after it.
	var claimable bool
	if err := s.rRow(ctx, claimableSQL, sql.Named("pools", string(pools)), sql.Named("caps", string(caps)),
		sql.Named("worker", p.WorkerID), sql.Named("request", reqID)).Scan(&claimable); err != nil {
		return nil, fmt.Errorf("leasing for worker %s: looking for work: %w", p.WorkerID, err)
	}
	if !claimable {
		return nil, nil
	}
	var lease *api.Lease
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if p.RequestID != "" {
			o, err := scanOp(s.txRow(ctx, tx, `SELECT `+opCols+`, body, secrets FROM operations
				WHERE worker_id = ? AND lease_request_id = ? AND state IN ('leased', 'running') AND lease_expires_at >= ?`,
				p.WorkerID, p.RequestID, nanos(p.Now)), true)
			if err == nil {
				l := o.lease()
				lease = &l
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("looking up the lease of request %s: %w", p.RequestID, err)
			}
		}
		o, err := scanOp(s.txRow(ctx, tx, claimSQL, sql.Named("worker", p.WorkerID), sql.Named("lease", p.LeaseID),
			sql.Named("request", reqID), sql.Named("expires", nanos(p.ExpiresAt)), sql.Named("now", nanos(p.Now)),
			sql.Named("pools", string(pools)), sql.Named("caps", string(caps))), true)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("claiming: %w", err)
		}
		if o.DeploymentID != "" {
			if _, err := s.txExec(ctx, tx, `UPDATE deployments SET state = 'running' WHERE id = ? AND state = 'queued'`,
				o.DeploymentID); err != nil {
				return fmt.Errorf("starting deployment %s: %w", o.DeploymentID, err)
			}
		}
		l := o.lease()
		lease = &l
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("leasing for worker %s: %w", p.WorkerID, err)
	}
	return lease, nil
}

// Leases returns the live leases a worker holds.
func (s *Store) Leases(ctx context.Context, workerID string, now time.Time) ([]api.Lease, error) {
	rows, err := s.rQuery(ctx, `SELECT `+opCols+`, body, secrets FROM operations
		WHERE worker_id = ? AND state IN ('leased', 'running') AND lease_expires_at >= ? ORDER BY seq`, workerID, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("listing leases of worker %s: %w", workerID, err)
	}
	defer rows.Close()
	leases := []api.Lease{}
	for rows.Next() {
		o, err := scanOp(rows, true)
		if err != nil {
			return nil, fmt.Errorf("listing leases of worker %s: %w", workerID, err)
		}
		leases = append(leases, o.lease())
	}
	return leases, rows.Err()
}

// held loads the operation ref names and checks that ref is its live lease. For a terminal operation the
// row is returned along with a *store.LeaseLostError so that callers can recognise a replay.
func (s *Store) held(ctx context.Context, tx *sql.Tx, ref store.LeaseRef) (opRow, error) {
	o, err := scanOp(s.txRow(ctx, tx, `SELECT `+opCols+` FROM operations WHERE id = ?`, ref.OperationID), false)
	if errors.Is(err, sql.ErrNoRows) {
		return o, fmt.Errorf("operation %s: %w", ref.OperationID, store.ErrNotFound)
	}
	if err != nil {
		return o, fmt.Errorf("reading operation %s: %w", ref.OperationID, err)
	}
	if o.WorkerID != ref.WorkerID || o.leaseID != ref.LeaseID || o.leaseID == "" {
		return o, fmt.Errorf("operation %s: %w", ref.OperationID, store.ErrNotLeased)
	}
	if o.State.Terminal() {
		return o, &store.LeaseLostError{OperationID: o.ID, State: o.State, Expired: o.State == api.StateLost}
	}
	if o.leaseExpiresAt.Before(ref.Now) {
		return o, &store.LeaseLostError{OperationID: o.ID, State: o.State, Expired: true}
	}
	return o, nil
}

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
			WHERE seq = ? RETURNING `+opCols, nanos(ref.Now), message, message, o.seq), false)
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
	switch r.State {
	case api.StateSucceeded:
		if r.ExitCode == nil || *r.ExitCode != 0 {
			return out, ch, fmt.Errorf("finishing operation %s: state succeeded needs exit code 0: %w", ref.OperationID, store.ErrInvalid)
		}
	case api.StateFailed, api.StateCancelled, api.StateTimedOut:
	default:
		return out, ch, fmt.Errorf("finishing operation %s: a result's state must be succeeded, failed, cancelled or timed-out, not %q: %w",
			ref.OperationID, r.State, store.ErrInvalid)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := s.held(ctx, tx, ref)
		var lost *store.LeaseLostError
		if errors.As(err, &lost) && !lost.Expired && o.State == r.State && sameExit(o.ExitCode, r.ExitCode) {
			out = o.Operation // a retried result: already done
			return nil
		}
		if err != nil {
			return err
		}
		if r.LastSeq > o.lastSeq {
			return &store.MissingLinesError{Have: o.lastSeq, Want: r.LastSeq}
		}
		var exit sql.NullInt64
		if r.ExitCode != nil {
			exit = sql.NullInt64{Int64: int64(*r.ExitCode), Valid: true}
		}
		o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET state = ?, exit_code = ?, message = ?,
			finished_at = ?, secrets = NULL WHERE seq = ? RETURNING `+opCols,
			r.State, exit, r.Message, nanos(ref.Now), o.seq), false)
		if err != nil {
			return fmt.Errorf("updating operation %s: %w", o.ID, err)
		}
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

func sameExit(a, b *int) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// advance moves a deployment on after its step o ended: the next step becomes claimable when o succeeded;
// otherwise the queued steps after it are cancelled. Then the deployment's state is settled.
func (s *Store) advance(ctx context.Context, tx *sql.Tx, o opRow, now time.Time, ch *store.Changes) error {
	if o.State == api.StateSucceeded {
		var r store.Ready
		var caps sql.NullString
		err := s.txRow(ctx, tx, `UPDATE operations SET ready = 1, message = ''
			WHERE deployment_id = ? AND step = ? AND state = 'queued' RETURNING id, pool, capabilities`,
			o.DeploymentID, o.Step+1).Scan(&r.ID, &r.Pool, &caps)
		switch {
		case err == nil:
			if caps.Valid {
				_ = json.Unmarshal([]byte(caps.String), &r.Capabilities)
			}
			ch.Ready = append(ch.Ready, r)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("readying step %d of deployment %s: %w", o.Step+1, o.DeploymentID, err)
		}
	} else {
		label := fmt.Sprintf("step %d", o.Step)
		if o.Name != "" {
			label += fmt.Sprintf(" (%s)", o.Name)
		}
		reason := fmt.Sprintf("not run: %s ended %s", label, o.State)
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
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("cancelling the rest of deployment %s: %w", depID, err)
		}
		ch.Ended = append(ch.Ended, id)
	}
	return rows.Err()
}

// settle derives a deployment's state from its steps.
func (s *Store) settle(ctx context.Context, tx *sql.Tx, depID string, now time.Time) error {
	rows, err := s.txQuery(ctx, tx, `SELECT state, COUNT(*) FROM operations WHERE deployment_id = ? GROUP BY state`, depID)
	if err != nil {
		return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
	}
	counts := map[api.State]int{}
	total := 0
	for rows.Next() {
		var st api.State
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
		}
		counts[st] = n
		total += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the steps of deployment %s: %w", depID, err)
	}
	var state api.State
	switch {
	case counts[api.StateLeased]+counts[api.StateRunning] > 0:
		state = api.StateRunning
	case counts[api.StateSucceeded] == total:
		state = api.StateSucceeded
	case counts[api.StateFailed]+counts[api.StateTimedOut]+counts[api.StateLost] > 0:
		state = api.StateFailed
	case counts[api.StateCancelled] > 0:
		state = api.StateCancelled
	case counts[api.StateSucceeded] > 0:
		state = api.StateRunning
	default:
		state = api.StateQueued
	}
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

// ---- cancelling and expiry ----

// Cancel cancels a queued operation at once or asks the worker of a live one to stop.
func (s *Store) Cancel(ctx context.Context, id string, now time.Time) (api.Operation, store.Changes, error) {
	var out api.Operation
	var ch store.Changes
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		o, err := scanOp(s.txRow(ctx, tx, `SELECT `+opCols+` FROM operations WHERE id = ?`, id), false)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("operation %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading operation %s: %w", id, err)
		}
		switch o.State {
		case api.StateQueued:
			o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET state = 'cancelled',
				message = 'cancelled before it started', finished_at = ?, secrets = NULL WHERE seq = ? RETURNING `+opCols,
				nanos(now), o.seq), false)
			if err != nil {
				return fmt.Errorf("cancelling operation %s: %w", id, err)
			}
			out = o2.Operation
			ch.Ended = append(ch.Ended, id)
			if o.DeploymentID != "" {
				return s.advance(ctx, tx, o2, now, &ch)
			}
			return nil
		case api.StateLeased, api.StateRunning:
			o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET cancel_requested = 1 WHERE seq = ? RETURNING `+opCols,
				o.seq), false)
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
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("deployment %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading deployment %s: %w", id, err)
		}
		if state.Terminal() {
			return fmt.Errorf("deployment %s %s: %w", id, state, store.ErrFinished)
		}
		if err := s.cancelQueued(ctx, tx, id, 0, "not run: deployment cancelled", now, &ch); err != nil {
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

// ExpireLeases marks operations whose lease expired as lost. Each update re-checks the lease id and the
// expiry, so a heartbeat that renewed the lease in between wins.
func (s *Store) ExpireLeases(ctx context.Context, now time.Time) (store.Changes, error) {
	var ch store.Changes
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := s.txQuery(ctx, tx, `SELECT `+opCols+` FROM operations INDEXED BY operations_worker
			WHERE state IN ('leased', 'running') AND lease_expires_at < ? ORDER BY seq`, nanos(now))
		if err != nil {
			return fmt.Errorf("finding expired leases: %w", err)
		}
		var expired []opRow
		for rows.Next() {
			o, err := scanOp(rows, false)
			if err != nil {
				rows.Close()
				return fmt.Errorf("finding expired leases: %w", err)
			}
			expired = append(expired, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("finding expired leases: %w", err)
		}
		for _, o := range expired {
			msg := fmt.Sprintf("lost: the lease of worker %s expired at %s without a heartbeat; not run again",
				o.WorkerID, o.leaseExpiresAt.Format(time.RFC3339))
			if o.CancelRequested {
				msg += " (a cancel had been requested)"
			}
			o2, err := scanOp(s.txRow(ctx, tx, `UPDATE operations SET state = 'lost', message = ?, finished_at = ?,
				secrets = NULL WHERE seq = ? AND lease_id = ? AND state IN ('leased', 'running') AND lease_expires_at < ?
				RETURNING `+opCols, msg, nanos(now), o.seq, o.leaseID, nanos(now)), false)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("marking operation %s lost: %w", o.ID, err)
			}
			ch.Ended = append(ch.Ended, o.ID)
			if o.DeploymentID != "" {
				if err := s.advance(ctx, tx, o2, now, &ch); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return ch, fmt.Errorf("expiring leases: %w", err)
	}
	return ch, nil
}

// ---- reading ----

// Operation returns one operation with its spec; sensitive values are masked.
func (s *Store) Operation(ctx context.Context, id string) (api.Operation, error) {
	o, err := scanOp(s.rRow(ctx, `SELECT `+opCols+`, body, NULL FROM operations WHERE id = ?`, id), true)
	if errors.Is(err, sql.ErrNoRows) {
		return api.Operation{}, fmt.Errorf("operation %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return api.Operation{}, fmt.Errorf("reading operation %s: %w", id, err)
	}
	return o.Operation, nil
}

// OperationSummary returns one operation without its body.
func (s *Store) OperationSummary(ctx context.Context, id string) (api.Operation, error) {
	o, err := scanOp(s.rRow(ctx, `SELECT `+opCols+` FROM operations WHERE id = ?`, id), false)
	if errors.Is(err, sql.ErrNoRows) {
		return api.Operation{}, fmt.Errorf("operation %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return api.Operation{}, fmt.Errorf("reading operation %s: %w", id, err)
	}
	return o.Operation, nil
}

// ListOperations returns operation summaries, newest first.
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]api.Operation, error) {
	var where []string
	var args []any
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.Pool != "" {
		where, args = append(where, "pool = ?"), append(args, f.Pool)
	}
	if f.WorkerID != "" {
		where, args = append(where, "worker_id = ?"), append(args, f.WorkerID)
	}
	if f.DeploymentID != "" {
		where, args = append(where, "deployment_id = ?"), append(args, f.DeploymentID)
	}
	q := `SELECT ` + opCols + ` FROM operations`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += " ORDER BY seq DESC LIMIT ?"
	args = append(args, limit)
	return s.queryOps(ctx, q, args...)
}

func (s *Store) queryOps(ctx context.Context, q string, args ...any) ([]api.Operation, error) {
	rows, err := s.rQuery(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing operations: %w", err)
	}
	defer rows.Close()
	ops := []api.Operation{}
	for rows.Next() {
		o, err := scanOp(rows, false)
		if err != nil {
			return nil, fmt.Errorf("listing operations: %w", err)
		}
		ops = append(ops, o.Operation)
	}
	return ops, rows.Err()
}

// Deployment returns one deployment with summaries of its steps.
func (s *Store) Deployment(ctx context.Context, id string) (api.Deployment, error) {
	var d api.Deployment
	var created int64
	err := s.rRow(ctx, `SELECT id, name, state, created_at FROM deployments WHERE id = ?`, id).
		Scan(&d.ID, &d.Name, &d.State, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("deployment %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return d, fmt.Errorf("reading deployment %s: %w", id, err)
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
	rows, err := s.rQuery(ctx, `SELECT id FROM deployments ORDER BY created_at DESC, id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("listing deployments: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing deployments: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
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

// SensitiveValues returns the sensitive values of an operation that has not ended.
func (s *Store) SensitiveValues(ctx context.Context, id string) ([]string, error) {
	var secrets sql.NullString
	err := s.rRow(ctx, `SELECT secrets FROM operations WHERE id = ?`, id).Scan(&secrets)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("operation %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading sensitive values of %s: %w", id, err)
	}
	if !secrets.Valid {
		return nil, nil
	}
	var m map[int]string
	if err := json.Unmarshal([]byte(secrets.String), &m); err != nil {
		return nil, fmt.Errorf("decoding sensitive values of %s: %w", id, err)
	}
	values := make([]string, 0, len(m))
	for _, v := range m {
		values = append(values, v)
	}
	return values, nil
}
