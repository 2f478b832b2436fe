package jobrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// healthOf is the one place the worker's health is put together, for heartbeats and probes: the last round
// of checks (nil: none yet) and notes that do not make the worker unhealthy (the self-update's state, a
// refused upgrade of the release's values). OK is false when a check fails or none has run; Message names the
// failing checks first, then the notes, capped to what the server accepts.
func healthOf(checks []api.Check, checkedAt time.Time, notes ...string) api.Health {
	h := api.Health{OK: len(checks) > 0, Checks: checks, CheckedAt: checkedAt}
	var parts []string
	if len(checks) == 0 {
		parts = append(parts, "health checks have not run yet")
	}
	for _, c := range checks {
		if !c.OK {
			h.OK = false
			parts = append(parts, c.Name+": "+c.Message)
		}
	}
	for _, n := range notes {
		if n != "" {
			parts = append(parts, n)
		}
	}
	h.Message = capMessage(strings.Join(parts, "; "), api.MaxMessageLen)
	return h
}

// slowBeat is the longest one heartbeat may take without the loop counting as stuck: the dispatch client
// gives up a call (and its retries) after a minute, and a self-update's chart download after another.
const slowBeat = 2 * time.Minute

// beats records the heartbeat loop's progress for the probes: when it last began or ended an attempt, and
// whether the last attempt got an answer.
type beats struct {
	mu       sync.Mutex
	interval time.Duration
	started  bool      // the loop runs
	progress time.Time // when it last began or ended an attempt
	answered bool      // the last attempt that ended got an answer
	err      string    // why not
}

func (b *beats) begin(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.started, b.progress = true, now
}

func (b *beats) end(now time.Time, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.progress, b.answered, b.err = now, err == nil, ""
	if err != nil {
		b.err = err.Error()
	}
}

// last says whether the last heartbeat that ended got an answer, and if not, why.
func (b *beats) last() (answered bool, err string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.answered, b.err
}

// stuck says why the heartbeat loop counts as stuck at now, or nil: it has started and neither began nor ended
// an attempt within three intervals plus slowBeat.
func (b *beats) stuck(now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if limit := 3*b.interval + slowBeat; b.started && now.Sub(b.progress) > limit {
		return fmt.Errorf("the heartbeat loop is stuck: no heartbeat began or ended for %s (limit %s)", now.Sub(b.progress).Round(time.Second), limit)
	}
	return nil
}

// unready says why the agent cannot take work, or nil: it is starting, a check fails, or the dispatch server
// did not answer its last heartbeat (or none yet).
func unready(starting bool, h api.Health, answered bool, beatErr string) error {
	var why []string
	if starting {
		why = append(why, "starting: syncing informers or re-adopting Jobs")
	}
	if !h.OK {
		why = append(why, "unhealthy: "+h.Message)
	}
	switch {
	case !answered && beatErr != "":
		why = append(why, "the dispatch server did not answer the last heartbeat: "+beatErr)
	case !answered:
		why = append(why, "no heartbeat answered yet")
	}
	if len(why) == 0 {
		return nil
	}
	return errors.New("not ready: " + strings.Join(why, "; "))
}

// HealthServer serves /healthz (fails when the agent's heartbeat loop is stuck: the container restarts),
// /readyz (fails while the agent starts, while a health check fails, or when the dispatch server did not
// answer the last heartbeat) and /metrics on a listener. Start it with Start.
type HealthServer struct {
	ln      net.Listener
	live    func(now time.Time) error
	ready   func() error
	metrics http.Handler
}

// NewHealthServer returns the health server of agent a on ln.
func NewHealthServer(ln net.Listener, a *Agent) *HealthServer {
	return &HealthServer{ln: ln, live: a.Live, ready: a.Readiness, metrics: a.metrics.handler()}
}

// Start serves until ctx ends, then shuts down within five seconds.
func (s *HealthServer) Start(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.live(time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", s.metrics)
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
