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
)

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
