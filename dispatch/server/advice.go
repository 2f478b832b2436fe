package server

import (
	"net/http"

	"github.com/octo-worker/octo-worker/dispatch/advise"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// requestsAdvice recommends script pod requests for a pool (or one step name in it) from the usage its ended
// operations' runners measured.
func (s *Server) requestsAdvice(w http.ResponseWriter, r *http.Request, _ caller) error {
	q := r.URL.Query()
	pool, step := q.Get("pool"), q.Get("step")
	if err := validate.AdviceQuery(pool, step); err != nil {
		return err
	}
	if _, err := s.st.Pool(r.Context(), pool); err != nil {
		return err
	}
	samples, err := s.st.UsageSamples(r.Context(), store.UsageFilter{Pool: pool, Name: step, Limit: api.MaxAdviceSamples})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, advise.Requests(pool, step, samples))
	return nil
}
