package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
	"github.com/octo-worker/octo-worker/dispatch/wake"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ caller) error {
	if _, err := s.st.Setting(r.Context(), adminTokenSetting); err != nil && !errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusServiceUnavailable, "", "", "the store is not answering: %v", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// ---- pools and tokens ----

func (s *Server) createPool(w http.ResponseWriter, r *http.Request, _ caller) error {
	var req api.CreatePoolRequest
	if err := body(r, &req, validate.CreatePool); err != nil {
		return err
	}
	p := api.Pool{Name: req.Name, Description: req.Description, CreatedAt: time.Now().UTC()}
	if err := s.st.CreatePool(r.Context(), p); err != nil {
		if errors.Is(err, store.ErrExists) {
			return errf(http.StatusConflict, "name", api.CodeExists, "pool %q already exists", req.Name)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, p)
	return nil
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request, _ caller) error {
	pools, err := s.st.ListPools(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.PoolList{Pools: pools})
	return nil
}

// poolsExist refuses pools that were never created, naming the field.
func (s *Server) poolsExist(ctx context.Context, field string, pools []string) error {
	for i, p := range pools {
		if _, err := s.st.Pool(ctx, p); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				f := field
				if len(pools) > 1 || field == "pools" {
					f = fmt.Sprintf("%s[%d]", field, i)
				}
				return errf(http.StatusUnprocessableEntity, f, "", "pool %q does not exist: create it first with `octo-worker pool create %s`", p, p)
			}
			return err
		}
	}
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, _ caller) error {
	var req api.CreateTokenRequest
	if err := body(r, &req, validate.CreateToken); err != nil {
		return err
	}
	if err := s.poolsExist(r.Context(), "pools", req.Pools); err != nil {
		return err
	}
	ttl := req.TTLSeconds
	if ttl == 0 {
		ttl = validate.DefaultTokenTTLSeconds
	}
	now := time.Now().UTC()
	secret := newToken(prefixRegistration)
	t := store.Token{ID: newID("tok-"), Hash: hashToken(secret), Pools: req.Pools, CreatedAt: now,
		ExpiresAt: now.Add(time.Duration(ttl) * time.Second)}
	if err := s.st.CreateToken(r.Context(), t); err != nil {
		return err
	}
	out := tokenOut(t)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func tokenOut(t store.Token) api.RegistrationToken {
	return api.RegistrationToken{ID: t.ID, Pools: t.Pools, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt}
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ caller) error {
	tokens, err := s.st.ListTokens(r.Context())
	if err != nil {
		return err
	}
	out := api.TokenList{Tokens: []api.RegistrationToken{}}
	for _, t := range tokens {
		out.Tokens = append(out.Tokens, tokenOut(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, _ caller) error {
	t, err := s.st.RevokeToken(r.Context(), r.PathValue("id"), time.Now().UTC())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tokenOut(t))
	return nil
}

// ---- operations and deployments ----

// checkCapabilities refuses a step needing a capability that no registered worker of its pool has. A pool
// without workers yet is accepted: the operation waits for one.
func (s *Server) checkCapabilities(ctx context.Context, prefix string, spec *api.OperationSpec) error {
	if len(spec.Capabilities) == 0 {
		return nil
	}
	workers, err := s.st.PoolWorkers(ctx, spec.Pool)
	if err != nil || len(workers) == 0 {
		return err
	}
	for i, c := range spec.Capabilities {
		found := false
		for _, w := range workers {
			for _, wc := range w.Capabilities {
				found = found || wc == c
			}
		}
		if found {
			continue
		}
		field := fmt.Sprintf("%scapabilities[%d]", prefix, i)
		if c == "docker" {
			return errf(http.StatusUnprocessableEntity, field, api.CodeCapability,
				"no worker in pool %q offers \"docker\": octo-worker runs each step as a Kubernetes Job and has no Docker daemon; "+
					"give the step a container image (image) instead, or send it to a pool with a worker that has Docker", spec.Pool)
		}
		return errf(http.StatusUnprocessableEntity, field, api.CodeCapability,
			"no worker registered in pool %q offers capability %q: send the step to another pool or drop the requirement", spec.Pool, c)
	}
	return nil
}

func normalize(spec *api.OperationSpec) {
	if spec.Syntax == "" {
		spec.Syntax = "bash"
	}
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request, _ caller) error {
	var spec api.OperationSpec
	if err := body(r, &spec, func(s *api.OperationSpec) error { return validate.OperationSpec("", s, false) }); err != nil {
		return err
	}
	normalize(&spec)
	ctx := r.Context()
	if err := s.checkCapabilities(ctx, "", &spec); err != nil {
		return err
	}
	op, err := s.enqueue(ctx, store.NewOperation{ID: newID("op-"), Spec: spec, CreatedAt: time.Now().UTC()})
	if errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusUnprocessableEntity, "pool", "", "pool %q does not exist: create it first with `octo-worker pool create %s`", spec.Pool, spec.Pool)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, op)
	return nil
}

// enqueue stores an operation. When a worker that can take it waits in a long-poll, the operation is
// inserted already leased to that worker and handed to its poll: one transaction and no second wake-up on
// the way from submit to lease. Otherwise it is queued and a waiter (if any) is woken to claim it.
func (s *Server) enqueue(ctx context.Context, op store.NewOperation) (api.Operation, error) {
	if waiter := s.queue.Reserve(op.Spec.Pool, op.Spec.Capabilities); waiter != nil {
		l, err := s.st.CreateLeasedOperation(ctx, op, s.stamped(waiter.Data))
		if err != nil {
			waiter.Release()
			return api.Operation{}, err
		}
		if l != nil {
			waiter.Deliver(l)
			out := l.Operation
			out.Variables = masked(out.Variables)
			return out, nil
		}
		// The waiting worker was removed a moment ago (its poll is ending): queue the operation instead.
		waiter.Release()
	}
	created, err := s.st.CreateOperation(ctx, op)
	if err != nil {
		return created, err
	}
	s.queue.Notify(wake.Ticket{ID: created.ID, Pool: created.Pool, Capabilities: created.Capabilities})
	return created, nil
}

// masked returns a copy of vars with sensitive values replaced.
func masked(vars []api.Variable) []api.Variable {
	if vars == nil {
		return nil
	}
	out := make([]api.Variable, len(vars))
	for i, v := range vars {
		out[i] = v
		if v.Sensitive {
			out[i].Value = mask.Placeholder
		}
	}
	return out
}

func (s *Server) listOperations(w http.ResponseWriter, r *http.Request, _ caller) error {
	q := r.URL.Query()
	f := store.OperationFilter{State: api.State(q.Get("state")), Pool: q.Get("pool"), WorkerID: q.Get("worker"), DeploymentID: q.Get("deployment")}
	if f.State != "" && !knownState(f.State) {
		return errf(http.StatusBadRequest, "state", "", "unknown state %q: use queued, leased, running, succeeded, failed, cancelled, timed-out or lost", f.State)
	}
	limit, err := limitParam(r)
	if err != nil {
		return err
	}
	f.Limit = limit
	ops, err := s.st.ListOperations(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.OperationList{Operations: ops})
	return nil
}

func knownState(s api.State) bool {
	switch s {
	case api.StateQueued, api.StateLeased, api.StateRunning, api.StateSucceeded, api.StateFailed,
		api.StateCancelled, api.StateTimedOut, api.StateLost:
		return true
	}
	return false
}

func limitParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, errf(http.StatusBadRequest, "limit", "", "%q: use a number from 1 to 1000", v)
	}
	return n, nil
}

func (s *Server) getOperation(w http.ResponseWriter, r *http.Request, _ caller) error {
	op, err := s.st.Operation(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, op)
	return nil
}

func (s *Server) cancelOperation(w http.ResponseWriter, r *http.Request, _ caller) error {
	op, ch, err := s.st.Cancel(r.Context(), r.PathValue("id"), time.Now().UTC())
	if err != nil {
		return err
	}
	s.apply(ch)
	writeJSON(w, http.StatusOK, op)
	return nil
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request, _ caller) error {
	var spec api.DeploymentSpec
	if err := body(r, &spec, validate.DeploymentSpec); err != nil {
		return err
	}
	ctx := r.Context()
	now := time.Now().UTC()
	d := store.NewDeployment{ID: newID("dep-"), Name: spec.Name, CreatedAt: now}
	for i := range spec.Steps {
		step := spec.Steps[i]
		prefix := fmt.Sprintf("steps[%d].", i)
		field := prefix + "pool"
		if step.Pool == "" {
			step.Pool, field = spec.Pool, "pool"
		}
		normalize(&step)
		if err := s.poolsExist(ctx, field, []string{step.Pool}); err != nil {
			return err
		}
		if err := s.checkCapabilities(ctx, prefix, &step); err != nil {
			return err
		}
		d.Steps = append(d.Steps, store.NewOperation{ID: newID("op-"), Spec: step, CreatedAt: now})
	}
	dep, err := s.st.CreateDeployment(ctx, d)
	if err != nil {
		return err
	}
	first := dep.Operations[0]
	s.queue.Notify(wake.Ticket{ID: first.ID, Pool: first.Pool, Capabilities: first.Capabilities})
	writeJSON(w, http.StatusCreated, dep)
	return nil
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request, _ caller) error {
	limit, err := limitParam(r)
	if err != nil {
		return err
	}
	deps, err := s.st.ListDeployments(r.Context(), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.DeploymentList{Deployments: deps})
	return nil
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request, _ caller) error {
	d, err := s.st.Deployment(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) cancelDeployment(w http.ResponseWriter, r *http.Request, _ caller) error {
	d, ch, err := s.st.CancelDeployment(r.Context(), r.PathValue("id"), time.Now().UTC())
	if err != nil {
		return err
	}
	s.apply(ch)
	writeJSON(w, http.StatusOK, d)
	return nil
}

// ---- workers and versions ----

// health judges a worker: its own report, and a heartbeat within three intervals.
func (s *Server) health(w store.Worker, now time.Time) api.Worker {
	out := w.Worker
	if silent := now.Sub(w.LastHeartbeat); silent > 3*s.cfg.HeartbeatInterval {
		out.Healthy = false
		out.HealthMessage = fmt.Sprintf("no heartbeat for %s", silent.Round(time.Second))
	}
	return out
}

func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request, _ caller) error {
	workers, err := s.st.ListWorkers(r.Context())
	if err != nil {
		return err
	}
	now := time.Now()
	out := api.WorkerList{Workers: []api.Worker{}}
	for _, wk := range workers {
		out.Workers = append(out.Workers, s.health(wk, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) drainWorker(w http.ResponseWriter, r *http.Request, _ caller) error {
	var req api.DrainRequest
	if err := body(r, &req, nil); err != nil {
		return err
	}
	wk, err := s.st.SetDrain(r.Context(), r.PathValue("id"), req.Drain)
	if err != nil {
		return err
	}
	s.forgetWorkers(nil)
	writeJSON(w, http.StatusOK, s.health(wk, time.Now()))
	return nil
}

// removeWorker is an admin removing a worker (DELETE /api/v1/workers/{id}).
func (s *Server) removeWorker(w http.ResponseWriter, r *http.Request, _ caller) error {
	id := r.PathValue("id")
	if err := validate.WorkerID("id", id); err != nil {
		return errf(http.StatusBadRequest, "id", "", "%s", err.(*validate.Error).Message)
	}
	out, err := s.remove(r.Context(), id, "admin")
	if errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusNotFound, "", "", "worker %s does not exist: it was never registered, or was removed already; `octo-worker workers list` shows the registered workers", id)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// remove removes a worker. The store deletes it and makes the operations it held lost in one transaction;
// then its token leaves the authentication cache (so it stops working on this server at once), its lease
// long-polls in flight end with 401, and the followers of the lost operations get their end.
func (s *Server) remove(ctx context.Context, id, by string) (api.WorkerRemoval, error) {
	rw, err := s.st.RemoveWorker(ctx, id, time.Now().UTC())
	if err != nil {
		return api.WorkerRemoval{}, err
	}
	s.forgetWorkers(rw.Worker.TokenHash)
	s.endPolls(id)
	s.apply(rw.Changes)
	out := api.WorkerRemoval{Worker: s.health(rw.Worker, time.Now()), Lost: []string{}, Cancelled: []string{}}
	out.Lost = append(out.Lost, rw.Lost...)
	for _, ended := range rw.Changes.Ended {
		if !slices.Contains(rw.Lost, ended) {
			out.Cancelled = append(out.Cancelled, ended)
		}
	}
	entry := s.log.WithField("worker", id).WithField("name", rw.Worker.Name).WithField("by", by).
		WithField("lost", len(out.Lost)).WithField("cancelled", len(out.Cancelled))
	entry.Info("worker removed")
	for _, op := range out.Lost {
		s.log.WithField("operation", op).WithField("worker", id).Warn("worker removed: operation lost")
	}
	return out, nil
}

func (s *Server) putChart(w http.ResponseWriter, r *http.Request, _ caller) error {
	version := r.PathValue("version")
	if err := validate.Version("version", version); err != nil {
		return err
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(data) < 2 || !bytes.Equal(data[:2], []byte{0x1f, 0x8b}) {
		return errf(http.StatusUnprocessableEntity, "body", "", "not a gzip-compressed chart archive: upload the .tgz that `helm package` writes")
	}
	sum := sha256.Sum256(data)
	c := api.Chart{Version: version, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), UploadedAt: time.Now().UTC()}
	if err := s.st.PutChart(r.Context(), c, data); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) getChart(w http.ResponseWriter, r *http.Request, _ caller) error {
	c, data, err := s.st.Chart(r.Context(), r.PathValue("version"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("X-Chart-SHA256", c.SHA256)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, err = w.Write(data)
	return err
}

const desiredVersionSetting = "desired_version"

func chartURL(version string) string { return "/api/v1/charts/" + version }

func (s *Server) setVersion(w http.ResponseWriter, r *http.Request, _ caller) error {
	var req api.DesiredVersion
	if err := body(r, &req, validate.DesiredVersion); err != nil {
		return err
	}
	c, _, err := s.st.Chart(r.Context(), req.Version)
	if errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusUnprocessableEntity, "version", "", "no chart uploaded for version %s: upload it first (PUT /api/v1/charts/%s, or `octo-worker workers upgrade --chart FILE`)", req.Version, req.Version)
	}
	if err != nil {
		return err
	}
	dv := api.DesiredVersion{Version: req.Version, ChartURL: chartURL(req.Version), ChartSHA256: c.SHA256}
	b, _ := json.Marshal(dv)
	if err := s.st.SetSetting(r.Context(), desiredVersionSetting, string(b)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dv)
	return nil
}

func (s *Server) desiredVersion(ctx context.Context) (api.DesiredVersion, error) {
	var dv api.DesiredVersion
	v, err := s.st.Setting(ctx, desiredVersionSetting)
	if errors.Is(err, store.ErrNotFound) {
		return dv, nil
	}
	if err != nil {
		return dv, err
	}
	if err := json.Unmarshal([]byte(v), &dv); err != nil {
		return dv, fmt.Errorf("decoding the desired version: %w", err)
	}
	return dv, nil
}

func (s *Server) getVersion(w http.ResponseWriter, r *http.Request, _ caller) error {
	dv, err := s.desiredVersion(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, dv)
	return nil
}
