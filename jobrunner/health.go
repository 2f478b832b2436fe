package jobrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// HealthServer serves /healthz (the process is alive and answering), /readyz (the agent has synced its
// informer and re-adopted its Jobs) and /metrics on a listener. Start it with Start.
type HealthServer struct {
	ln      net.Listener
	health  func() api.Health
	ready   func() bool
	metrics http.HandlerFunc
}

// NewHealthServer returns the health server of agent a on ln.
func NewHealthServer(ln net.Listener, a *Agent) *HealthServer {
	return &HealthServer{ln: ln, health: a.Health, ready: a.Ready, metrics: a.serveMetrics}
}

// Start serves until ctx ends, then shuts down within five seconds.
func (s *HealthServer) Start(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		h := s.health()
		fmt.Fprintln(w, "ok", h.Message)
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready() {
			http.Error(w, "not ready: syncing informers or re-adopting Jobs", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/metrics", s.metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(s.ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving health checks: %w", err)
}
