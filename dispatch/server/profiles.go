package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/validate"
	"github.com/octo-worker/octo-worker/dispatch/wake"
)

// checkProfile refuses a step whose pod profile no registered worker of its pool offers, naming the profiles
// that exist, and a step whose overrides no such worker allows, naming the override refused. Unlike a
// capability, a profile or an override needs a worker registered already: nothing offers it yet.
func (s *Server) checkProfile(ctx context.Context, prefix string, spec *api.OperationSpec) error {
	if spec.Profile == "" && spec.Overrides.Empty() {
		return nil
	}
	if err := s.poolsExist(ctx, prefix+"pool", []string{spec.Pool}); err != nil {
		return err
	}
	workers, err := s.st.PoolWorkers(ctx, spec.Pool)
	if err != nil {
		return err
	}
	var names []string
	offered, refused := false, error(nil)
	for _, w := range workers {
		names = append(names, w.Profiles...)
		if spec.Profile != "" && !slices.Contains(w.Profiles, spec.Profile) {
			continue
		}
		offered = true
		if err := validate.Allows(prefix+"overrides", w.AllowOverrides, spec.Overrides); err == nil {
			return nil
		} else if refused == nil {
			refused = err
		}
	}
	if !offered {
		slices.Sort(names)
		return errf(http.StatusUnprocessableEntity, prefix+"profile", api.CodeProfile,
			"no worker registered in pool %q offers profile %q (profiles offered there: [%s]): name one of those, or add it to a worker's scriptPods.profiles",
			spec.Pool, spec.Profile, strings.Join(slices.Compact(names), ", "))
	}
	var ve *validate.Error
	if errors.As(refused, &ve) {
		return errf(http.StatusUnprocessableEntity, ve.Field, api.CodeProfile, "no worker of pool %q allows it: %s", spec.Pool, ve.Message)
	}
	return refused
}

// ticket announces a newly claimable operation to waiting workers.
func ticket(id string, spec api.OperationSpec) wake.Ticket {
	return wake.Ticket{ID: id, Pool: spec.Pool, Capabilities: spec.Capabilities, Profile: spec.Profile}
}
