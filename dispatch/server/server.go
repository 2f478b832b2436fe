// Package server is the dispatch server's HTTP JSON API under /api/v1: it authenticates admins, registration
// tokens and workers, decodes and validates every request, masks sensitive values in what it stores, hands
// queued operations to waiting long-polls at once, streams logs to followers, and expires leases. State lives
// behind the store seam (package store); the wire types are package api; PROTOCOL.md documents the routes,
// and GET /api/v1/openapi.json serves an OpenAPI document generated from the same route table.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
	"github.com/octo-worker/octo-worker/dispatch/pkgfiles"
	"github.com/octo-worker/octo-worker/dispatch/portal"
	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/wake"
)

// Config tunes the server. Zero fields take the documented defaults.
type Config struct {
	// LeaseTTL is how long a lease lives without a heartbeat renewing it (default 2m). An operation whose
	// lease expires becomes lost: it is not run again.
	LeaseTTL time.Duration
	// HeartbeatInterval is the interval workers are told to heartbeat at (default 5s).
	HeartbeatInterval time.Duration
	// ExpiryInterval is how often expired leases are swept (default LeaseTTL/8, between 100ms and 5s).
	ExpiryInterval time.Duration
	// PollInterval is how often a waiting long-poll or log follower re-checks the store even without a
	// wake-up (default 5s). Wake-ups are immediate within one process and, through the store's wake.Bus,
	// across servers on one database; this covers a wake-up lost on the way. A long-poll re-checks at a random
	// moment around it, less often when many wait (recheckAfter).
	PollInterval time.Duration
	// ShutdownTimeout bounds the graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
	// BodyReadTimeout bounds reading a request's body (default 30s), LargeBodyReadTimeout that of the routes
	// that take more than 2 MiB: deployments, log batches, chart uploads (default 2m). A client that sends
	// slower gets 408 and its connection closed, so that slow bodies cannot hold connections open for ever.
	BodyReadTimeout      time.Duration
	LargeBodyReadTimeout time.Duration
	// Packages is the directory that keeps package content (nil: the server keeps no packages, and its package
	// routes answer 501). MaxPackageSize bounds one package (default api.DefaultMaxPackageSize).
	Packages       *pkgfiles.Dir
	MaxPackageSize int64
}

func (c Config) withDefaults() Config {
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 2 * time.Minute
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.ExpiryInterval <= 0 {
		c.ExpiryInterval = min(max(c.LeaseTTL/8, 100*time.Millisecond), 5*time.Second)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 5 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.BodyReadTimeout <= 0 {
		c.BodyReadTimeout = 30 * time.Second
	}
	if c.LargeBodyReadTimeout <= 0 {
		c.LargeBodyReadTimeout = 2 * time.Minute
	}
	if c.MaxPackageSize <= 0 {
		c.MaxPackageSize = api.DefaultMaxPackageSize
	}
	return c
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.LeaseTTL < 2*c.HeartbeatInterval {
		return fmt.Errorf("lease TTL %s must be at least twice the heartbeat interval %s, or one late heartbeat loses operations", c.LeaseTTL, c.HeartbeatInterval)
	}
	return nil
}

// Server is the dispatch server.
type Server struct {
	st     store.Store
	cfg    Config
	log    *logrus.Entry
	queue  *wake.Queue[store.ClaimParams, *api.Lease] // a waiter offers its claim; a hand-off delivers a lease
	logs   *wake.Broadcast
	routes []route
	bus    wake.Bus // carries wake-ups to and from the other servers on the same database (nil: none; signals.go)
	out    *outbox  // what waits to be published on bus

	adminMu   sync.RWMutex
	adminHash []byte

	maskMu  sync.Mutex
	maskers map[string]*mask.Masker // live operation id -> masker of its sensitive values

	authMu sync.Mutex
	authed map[string]authedWorker // worker token hash -> the worker, read or confirmed at most authCacheTTL ago

	pollMu sync.Mutex
	polls  map[string]map[*poll]struct{} // worker id -> its lease long-polls in flight
	npolls atomic.Int64                  // lease long-polls in flight (recheckAfter)

	dvMu sync.Mutex
	dv   api.DesiredVersion // the desired version as heartbeats answer it, read at dvAt (heartbeatVersion)
	dvAt time.Time

	metrics *metrics // served at GET /metrics

	touch *touches // idle heartbeats written in batches (touch.go); nil (each written at once) but while serving

	// asleep, nil but in tests, hears +1 when a lease long-poll falls asleep in its wait (ready for a
	// hand-off) and -1 when it wakes or leaves, so tests wait on that signal rather than poll. Set before
	// serving.
	asleep func(delta int)
}

// The worker cache: every worker call authenticates, and with thousands of idle workers a read per call was
// most of what the server did. Within one server the cache is exact for what it serves (pools, capabilities,
// profiles, drain): removal and drain clear the entry, and a heartbeat, which writes the worker's offer, keeps
// the entry only when the offer it wrote is the cached one (heartbeatCached), else drops it. Across server replicas
// a removal reaches the others at once (wake.Removed clears their caches, signals.go); a drain or a heartbeat
// through another replica is seen here within authCacheTTL, and costs nothing meanwhile: the store leases only
// to a worker that exists and is not asked to drain, and a cached drain is re-read before a poll is held.
//
// authCacheTTL is how long an entry lives without a heartbeat through this server renewing it: two heartbeat
// intervals, so that a worker heartbeating here is never read again for its long-polls.
func (s *Server) authCacheTTL() time.Duration { return 2 * s.cfg.HeartbeatInterval }

// maxAuthed bounds the cache (a bound, not a policy: it is cleared when full); it holds a fleet of 100,000
// workers, a few hundred bytes each.
const maxAuthed = 100000

type authedWorker struct {
	w  store.Worker
	at time.Time
}

// New returns a server over st. Call InitAdminToken before serving.
func New(st store.Store, cfg Config, log *logrus.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{st: st, cfg: cfg.withDefaults(), log: log.WithField("component", "dispatch-server"),
		queue: wake.NewQueue[store.ClaimParams, *api.Lease](), logs: wake.NewBroadcast(), maskers: map[string]*mask.Masker{}, authed: map[string]authedWorker{},
		polls: map[string]map[*poll]struct{}{}}
	if bs, ok := st.(busStore); ok {
		s.bus, s.out = bs.Bus(), newOutbox()
	}
	s.metrics = newMetrics(s)
	s.routes = s.routeTable()
	return s, nil
}

// Handler returns the HTTP handler serving every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes {
		mux.Handle(rt.method+" "+rt.pattern, s.metrics.instrument(rt.pattern, s.wrap(rt)))
	}
	mux.Handle("/api/", s.metrics.instrument("unmatched", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("no route %s %s: see GET /api/v1/openapi.json", r.Method, r.URL.Path)})
	})))
	mux.Handle("/", s.metrics.instrument("portal", portal.New(portalBackend{s}, s.log.WithField("component", "portal")))) // the web portal
	return s.recoverer(mux)
}

// Serve serves on ln (TLS when tlsConfig is not nil) and sweeps expired leases until ctx ends, then shuts
// down gracefully: open long-polls end with "nothing" and log streams end without their end record, so
// clients resume. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsConfig *tls.Config) error {
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	serveCtx, stopHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHandlers()
	// net/http's own complaints (TLS handshakes, broken connections) go to the log at debug level.
	errLog := s.log.WriterLevel(logrus.DebugLevel)
	defer errLog.Close()
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return serveCtx },
		ErrorLog:          log.New(errLog, "", 0),
	}
	var wg sync.WaitGroup
	s.touch = newTouches()
	touchCtx, stopTouches := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTouches()
	wg.Go(func() { s.writeTouches(touchCtx) }) // stops after the handlers, so it writes their last heartbeats
	errc := make(chan error, 1)
	wg.Go(func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving HTTP on %s: %w", ln.Addr(), err)
		}
	})
	sweepCtx, stopSweep := context.WithCancel(ctx)
	wg.Go(func() { s.sweep(sweepCtx) })
	pubCtx, stopPublish := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublish()
	if s.bus != nil {
		wg.Go(func() { s.listen(sweepCtx) })
		wg.Go(func() { s.publish(pubCtx) }) // stops after the handlers, so their last signals go out
	}
	s.log.WithField("address", ln.Addr().String()).WithField("tls", tlsConfig != nil).Info("dispatch server listening")

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopSweep()
	stopHandlers() // long-polls and followers return now, so Shutdown does not wait for them
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if serr := hs.Shutdown(shutCtx); serr != nil {
		err = errors.Join(err, fmt.Errorf("shutting down HTTP: %w", serr))
		_ = hs.Close()
	}
	stopPublish()
	stopTouches()
	wg.Wait()
	s.log.Info("dispatch server stopped")
	return err
}

// sweep marks operations with expired leases lost, every ExpiryInterval, until ctx ends.
func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(s.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.expire(ctx, time.Now())
	}
}

// expire marks operations whose lease expired before now lost, unless another server sweeps at this moment
// (then it does nothing: ran is false).
func (s *Server) expire(ctx context.Context, now time.Time) (ran bool) {
	var ch store.Changes
	ran, err := exclusively(ctx, s.st, sweepExpiry, func(ctx context.Context) (err error) {
		ch, err = s.st.ExpireLeases(ctx, now)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.WithError(err).Error("expiring leases")
		}
		return ran
	}
	for _, id := range ch.Ended {
		s.log.WithField("operation", id).Warn("lease expired: operation lost (or a deployment step after it cancelled)")
	}
	s.apply(ch)
	return ran
}

// apply wakes whoever waits on what a state change did.
func (s *Server) apply(ch store.Changes) {
	for _, r := range ch.Ready {
		s.ready(wake.Ticket{ID: r.ID, Pool: r.Pool, Capabilities: r.Capabilities, Profile: r.Profile})
	}
	for _, id := range ch.Ended {
		s.forgetMasker(id)
		s.logs.Signal(id)
		s.signal(wake.Signal{Kind: wake.Ended, ID: id})
	}
	s.countEnded(ch.Ended)
}

// masker returns the masker for a live operation's sensitive values.
func (s *Server) masker(ctx context.Context, id string) (*mask.Masker, error) {
	s.maskMu.Lock()
	m, ok := s.maskers[id]
	s.maskMu.Unlock()
	if ok {
		return m, nil
	}
	values, err := s.st.SensitiveValues(ctx, id)
	if err != nil {
		return nil, err
	}
	m = mask.New(values)
	s.maskMu.Lock()
	if len(s.maskers) >= 100000 { // a bound, not a policy: entries are dropped when operations end
		clear(s.maskers)
	}
	s.maskers[id] = m
	s.maskMu.Unlock()
	return m, nil
}

// workerByHash returns the worker a token hash belongs to, from the cache when fresh.
func (s *Server) workerByHash(ctx context.Context, h []byte) (store.Worker, error) {
	key := string(h)
	s.authMu.Lock()
	e, ok := s.authed[key]
	s.authMu.Unlock()
	if ok && time.Since(e.at) < s.authCacheTTL() {
		return e.w, nil
	}
	return s.readWorker(ctx, h)
}

// readWorker reads the worker of token hash h from the store and caches it.
func (s *Server) readWorker(ctx context.Context, h []byte) (store.Worker, error) {
	w, err := s.st.WorkerByTokenHash(ctx, h)
	if err != nil {
		return w, err
	}
	s.authMu.Lock()
	if len(s.authed) >= maxAuthed {
		clear(s.authed)
	}
	s.authed[string(h)] = authedWorker{w: w, at: time.Now()}
	s.authMu.Unlock()
	return w, nil
}

// heartbeatCached renews the cache entry of a worker whose heartbeat the store just recorded: kept (with the
// drain the store answered) when the heartbeat wrote the offer the entry holds, dropped when it changed it, so
// the next call reads the new one.
func (s *Server) heartbeatCached(h []byte, req api.HeartbeatRequest, drain bool) {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	e, ok := s.authed[string(h)]
	if !ok {
		return
	}
	w := e.w
	if !slices.Equal(req.Capabilities, w.Capabilities) || req.Profiles != nil && !slices.Equal(req.Profiles, w.Profiles) ||
		req.AllowOverrides != nil && !reflect.DeepEqual(req.AllowOverrides, w.AllowOverrides) {
		delete(s.authed, string(h))
		return
	}
	w.DrainRequested = drain
	s.authed[string(h)] = authedWorker{w: w, at: time.Now()}
}

// forgetWorkers drops cached worker records: all of them, or the one of token hash h.
func (s *Server) forgetWorkers(h []byte) {
	s.authMu.Lock()
	if h == nil {
		clear(s.authed)
	} else {
		delete(s.authed, string(h))
	}
	s.authMu.Unlock()
}

func (s *Server) rememberMasker(id string, m *mask.Masker) {
	s.maskMu.Lock()
	if len(s.maskers) >= 100000 {
		clear(s.maskers)
	}
	s.maskers[id] = m
	s.maskMu.Unlock()
}

func (s *Server) forgetMasker(id string) {
	s.maskMu.Lock()
	delete(s.maskers, id)
	s.maskMu.Unlock()
}
