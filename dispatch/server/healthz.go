package server

import (
	"errors"
	"net/http"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ caller) error {
	if _, err := s.st.Setting(r.Context(), adminTokenSetting); err != nil && !errors.Is(err, store.ErrNotFound) {
		return errf(http.StatusServiceUnavailable, "", "", "the store is not answering: %v", err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}
