package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
	"github.com/octo-worker/octo-worker/dispatch/wake"
)

// health judges a worker (store.WorkerState: its own report, a heartbeat within the window, its version
// against desired) at now. An unavailable worker is shown unhealthy, with how long it has been silent.
func (s *Server) health(w store.Worker, now time.Time, desired string) api.Worker {
	out := w.Worker
	out.State = store.WorkerState(w.Worker, now, s.cfg.HeartbeatInterval, desired)
	if out.State == api.WorkerUnavailable {
		out.Healthy = false
		out.HealthMessage = fmt.Sprintf("no heartbeat for %s", now.Sub(w.LastHeartbeat).Round(time.Second))
	}
	return out
}

// judge is health with the desired version read from the store.
func (s *Server) judge(ctx context.Context, w store.Worker) (api.Worker, error) {
	dv, err := s.desiredVersion(ctx)
	if err != nil {
		return api.Worker{}, err
	}
	return s.health(w, time.Now(), dv.Version), nil
}

func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request, _ caller) error {
	workers, err := s.st.ListWorkers(r.Context())
	if err != nil {
		return err
	}
	dv, err := s.desiredVersion(r.Context())
	if err != nil {
		return err
	}
	now := time.Now()
	out := api.WorkerList{Workers: []api.Worker{}}
	for _, wk := range workers {
		out.Workers = append(out.Workers, s.health(wk, now, dv.Version))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// workerByID reads the worker of the request's {id}: 400 for a malformed id, 404 for an unknown one.
func (s *Server) workerByID(r *http.Request) (store.Worker, error) {
	id := r.PathValue("id")
	if err := validate.WorkerID("id", id); err != nil {
		return store.Worker{}, errf(http.StatusBadRequest, "id", "", "%s", err.(*validate.Error).Message)
	}
	wk, err := s.st.Worker(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return wk, errf(http.StatusNotFound, "", "", "worker %s does not exist: it was never registered, or was removed; `octo-worker workers list` shows the registered workers", id)
	}
	return wk, err
}

// getWorker shows one worker with its state and every check of its last report (GET /api/v1/workers/{id}).
func (s *Server) getWorker(w http.ResponseWriter, r *http.Request, _ caller) error {
	wk, err := s.workerByID(r)
	if err != nil {
		return err
	}
	out, err := s.judge(r.Context(), wk)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// wakeWorker wakes the lease long-polls of one worker to claim again.
func (s *Server) wakeWorker(id string) {
	s.queue.WakeWhere(func(p store.ClaimParams) bool { return p.WorkerID == id })
	s.signal(wake.Signal{Kind: wake.Worker, ID: id})
}

// checkScript is what a health check asked for by an admin runs: a tiny script in the worker's default
// image, so a script pod is scheduled, started and logged like any operation's.
const checkScript = `echo "octo-worker health check"
id
uname -a
date -u
`

// checkWorker queues a health check of one worker (POST /api/v1/workers/{id}/check): an operation targeted
// at that worker, which it claims before its pools' other operations and whatever its health (an admin sees
// what a script pod does on an unhealthy worker), once it has a free slot.
func (s *Server) checkWorker(w http.ResponseWriter, r *http.Request, _ caller) error {
	wk, err := s.workerByID(r)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	if wk.DrainRequested {
		return errf(http.StatusConflict, "", "", "worker %s is asked to drain and takes no operation, a health check included: resume it with `octo-worker workers drain --resume %s` first", wk.ID, wk.ID)
	}
	if st := store.WorkerState(wk.Worker, now, s.cfg.HeartbeatInterval, ""); st == api.WorkerUnavailable {
		return errf(http.StatusConflict, "", "", "worker %s is unavailable: no heartbeat for %s, so nothing would run the check; look at its pod (kubectl logs) and its connection to this server",
			wk.ID, now.Sub(wk.LastHeartbeat).Round(time.Second))
	}
	if len(wk.Pools) == 0 {
		return errf(http.StatusConflict, "", "", "worker %s belongs to no pool; register it into one", wk.ID)
	}
	op, err := s.st.CreateOperation(r.Context(), store.NewOperation{ID: newID("op-"), CreatedAt: now, TargetWorker: wk.ID,
		Spec: api.OperationSpec{Name: "health check of " + wk.Name, Pool: wk.Pools[0], Script: checkScript, Syntax: "sh"}})
	if err != nil {
		return err
	}
	s.wakeWorker(wk.ID)
	s.log.WithField("worker", wk.ID).WithField("operation", op.ID).Info("health check queued")
	writeJSON(w, http.StatusCreated, op)
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
	out, err := s.judge(r.Context(), wk)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
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
	s.signal(wake.Signal{Kind: wake.Removed, ID: id})
	s.apply(rw.Changes)
	dv, _ := s.desiredVersion(ctx) // the removal is done: without a desired version, the worker shows healthy
	out := api.WorkerRemoval{Worker: s.health(rw.Worker, time.Now(), dv.Version), Lost: []string{}, Cancelled: []string{}}
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
