package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

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
	if err := s.checkProfile(ctx, "", &spec); err != nil {
		return err
	}
	pkgs, err := s.resolvePackages(ctx, "", &spec)
	if err != nil {
		return err
	}
	op, err := s.enqueue(ctx, store.NewOperation{ID: newID("op-"), Spec: spec, CreatedAt: time.Now().UTC(), Packages: pkgs})
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
	if waiter := s.queue.ReserveFor(ticket(op.ID, op.Spec)); waiter != nil {
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
		// The waiting worker may not take it now (removed, asked to drain, unhealthy, silent or full since it
		// began to wait): queue the operation instead, for another worker.
		waiter.Release()
	}
	created, err := s.st.CreateOperation(ctx, op)
	if err != nil {
		return created, err
	}
	s.ready(ticket(created.ID, created.OperationSpec))
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
		if err := s.checkProfile(ctx, prefix, &step); err != nil {
			return err
		}
		pkgs, err := s.resolvePackages(ctx, prefix, &step)
		if err != nil {
			return err
		}
		d.Steps = append(d.Steps, store.NewOperation{ID: newID("op-"), Spec: step, CreatedAt: now, Packages: pkgs})
	}
	dep, err := s.st.CreateDeployment(ctx, d)
	if err != nil {
		return err
	}
	first := dep.Operations[0]
	s.ready(ticket(first.ID, first.OperationSpec))
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
