package server

import (
	"context"
	"sync"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/wake"
)

// Several servers on one database: each wakes its own waiters at once (wake.Queue, wake.Broadcast) and
// publishes the same wake-ups on the store's wake.Bus after the change is committed; what another server
// publishes wakes this one's waiters the same way. A store that several processes share (PostgreSQL) offers
// the bus; SQLite serves one process and has none.

// busStore is a store that several server processes may share: it carries their wake-ups.
type busStore interface {
	// Bus returns a bus for one server process: what it publishes reaches every other one's Listen.
	Bus() wake.Bus
}

// maxOutbox bounds the signals waiting to be published; past it they collapse into one wake.All.
const maxOutbox = 10000

// outbox collects the signals to publish: the publisher sends all that wait in one round trip, so a burst of
// log batches and submits costs one statement per round trip, not one each.
type outbox struct {
	mu   sync.Mutex
	sigs []wake.Signal
	seen map[sigKey]bool // the signals without a ticket waiting, sent once however often they come
	all  bool            // publish wake.All instead (too many signals waited, or a publish failed)
	kick chan struct{}   // has a value when signals wait
}

func newOutbox() *outbox {
	return &outbox{seen: map[sigKey]bool{}, kick: make(chan struct{}, 1)}
}

type sigKey struct {
	kind wake.Kind
	id   string
}

// signal publishes sigs to the other servers (when the store has a bus). Call it after the change it
// announces is committed, beside the local wake-up.
func (s *Server) signal(sigs ...wake.Signal) {
	o := s.out
	if o == nil { // no bus
		return
	}
	o.mu.Lock()
	for _, sig := range sigs {
		if o.all {
			break
		}
		if sig.Kind != wake.Ready {
			k := sigKey{sig.Kind, sig.ID}
			if o.seen[k] {
				continue
			}
			o.seen[k] = true
		}
		o.sigs = append(o.sigs, sig)
		if len(o.sigs) > maxOutbox {
			o.all = true
		}
	}
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// take returns what waits to be published, and empties the outbox.
func (o *outbox) take() []wake.Signal {
	o.mu.Lock()
	defer o.mu.Unlock()
	sigs := o.sigs
	if o.all {
		sigs = []wake.Signal{{Kind: wake.All}}
	}
	o.sigs, o.all = nil, false
	clear(o.seen)
	return sigs
}

// failed makes the next publish a wake.All: the signals of a failed publish are lost.
func (o *outbox) failed() {
	o.mu.Lock()
	o.all = true
	o.mu.Unlock()
}

// publishRetry is how long the publisher waits after a failed publish before it tries again.
const publishRetry = time.Second

// publish sends the outbox's signals on the bus until ctx ends, then sends what still waits (the last
// requests' signals) within the shutdown timeout.
func (s *Server) publish(ctx context.Context) {
	failing := false
	for {
		select {
		case <-s.out.kick:
		case <-ctx.Done():
			flush, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
			defer cancel()
			if sigs := s.out.take(); len(sigs) > 0 {
				if err := s.bus.Publish(flush, sigs); err != nil {
					s.log.WithError(err).Warn("publishing wake-ups to the other servers at shutdown (their waiters re-check on their poll interval)")
				}
			}
			return
		}
		sigs := s.out.take()
		if len(sigs) == 0 {
			continue
		}
		err := s.bus.Publish(ctx, sigs)
		switch {
		case err == nil && failing:
			failing = false
			s.log.Info("publishing wake-ups to the other servers again")
		case err != nil && ctx.Err() == nil:
			s.out.failed()
			if !failing {
				failing = true
				s.log.WithError(err).Warn("publishing wake-ups to the other servers (retrying; meanwhile their waiters re-check on their poll interval)")
			}
			select {
			case s.out.kick <- struct{}{}: // try again after publishRetry
			default:
			}
			select {
			case <-time.After(publishRetry):
			case <-ctx.Done():
			}
		}
	}
}

// listen wakes this server's waiters with what the other servers publish, until ctx ends.
func (s *Server) listen(ctx context.Context) {
	if err := s.bus.Listen(ctx, s.hear); err != nil && ctx.Err() == nil {
		s.log.WithError(err).Error("listening for the other servers' wake-ups stopped (waiters re-check on the poll interval)")
	}
}

// hear wakes the local waiters a signal of another server is meant for.
func (s *Server) hear(sig wake.Signal) {
	switch sig.Kind {
	case wake.Ready:
		s.queue.Notify(sig.Ticket)
	case wake.Lines:
		s.logs.Signal(sig.ID)
	case wake.Ended:
		s.forgetMasker(sig.ID)
		s.logs.Signal(sig.ID)
	case wake.Worker:
		s.queue.WakeWhere(func(p store.ClaimParams) bool { return p.WorkerID == sig.ID })
	case wake.Removed:
		s.forgetWorkers(nil) // its token stops working here at once, as on the server that removed it
		s.endPolls(sig.ID)
	case wake.All:
		s.queue.WakeWhere(func(store.ClaimParams) bool { return true })
		s.logs.SignalAll()
	}
}

// ready announces a claimable operation to this server's waiters and to the other servers'.
func (s *Server) ready(t wake.Ticket) {
	s.queue.Notify(t)
	s.signal(wake.Signal{Kind: wake.Ready, Ticket: t})
}

// exclusive is a store that several server processes may share: a periodic sweep (lease expiry, retention)
// runs on one of them at a time. The sweeps' statements are safe to run at once too (expiry re-checks the
// lease in its WHERE clause, retention deletes what is still there); the lock keeps N servers from doing the
// same work N times, and their writes from waiting on each other.
type exclusive interface {
	// Exclusively runs fn unless another process runs the sweep named name now; ran says whether fn ran.
	Exclusively(ctx context.Context, name string, fn func(context.Context) error) (ran bool, err error)
}

// The sweeps that run under the store's lock.
const (
	sweepExpiry    = "lease-expiry"
	sweepRetention = "retention"
)

// exclusively runs fn through st's lock when it has one, else (one process) directly.
func exclusively(ctx context.Context, st any, name string, fn func(context.Context) error) (bool, error) {
	if ex, ok := st.(exclusive); ok {
		return ex.Exclusively(ctx, name, fn)
	}
	return true, fn(ctx)
}
