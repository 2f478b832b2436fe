package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Idle heartbeats: with thousands of idle workers, a write per heartbeat was most of what the store did, and
// a hand-off's writes queued behind them. A heartbeat that changes nothing of its worker but the times (it
// runs nothing, and reports the same version, capacity, capabilities, health, draining and profiles as the
// last heartbeat this server wrote for it) is answered from memory and its times are written with others'
// every touchEvery (store.TouchWorkers). Everything else is written at once, as before: a change, and every
// heartbeat of a worker running something (it renews leases and learns what to cancel).
//
// What an idle heartbeat answers without the store: Cancel is empty (a worker running nothing has nothing to
// stop; one that holds a lease it has not reported yet hears of a cancel once it reports it), and Drain is the
// cached worker's, which the batch refreshes from the store (store.TouchWorkers answers each worker's drain
// request). A touch applies only while the stored last heartbeat is the one this server wrote: when another
// server wrote one since, or the worker is gone, it is dropped and the worker's next heartbeat here is written
// in full. So in the database a worker's last heartbeat is at most touchEvery (plus the batch's write) late,
// far below the store.SilentHeartbeats intervals after which a worker is unavailable (claims lease only to
// workers within them).

// touchEvery is how often idle heartbeats are written, at most (a tenth of the interval when that is shorter).
const touchEvery = 100 * time.Millisecond

// touches is what the server knows of its workers' idle heartbeats.
type touches struct {
	flushMu sync.Mutex // held by a batch from start to end

	mu      sync.Mutex
	last    map[string]lastBeat    // worker id -> the last heartbeat this server wrote or queued for it
	pending map[string]store.Touch // worker id -> the touch to write with the next batch
}

// lastBeat is the last heartbeat a server wrote (or queued) for an idle worker.
type lastBeat struct {
	sum       [sha256.Size]byte // what it reported, its times and running list aside (beatSum)
	at        time.Time         // its time: the stored last heartbeat once written
	tokenHash string            // the worker's, to refresh its cached drain request
}

func newTouches() *touches {
	return &touches{last: map[string]lastBeat{}, pending: map[string]store.Touch{}}
}

// beatSum sums what a heartbeat reports but its running list and the time its health checks ran.
func beatSum(req api.HeartbeatRequest) [sha256.Size]byte {
	req.Running, req.Health.CheckedAt = nil, time.Time{}
	b, _ := json.Marshal(req) // plain data: it cannot fail
	return sha256.Sum256(b)
}

// idleBeat queues the times of an idle heartbeat of worker id and reports true, or reports false when the
// heartbeat must be written in full: it runs something, or it reports something else than the last heartbeat
// this server wrote for it (or the server wrote none it still knows of).
func (s *Server) idleBeat(id string, req api.HeartbeatRequest, now time.Time) bool {
	t := s.touch
	if t == nil || len(req.Running) > 0 {
		return false
	}
	sum := beatSum(req)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.last[id]
	if !ok || e.sum != sum {
		return false
	}
	prev := e.at
	if p, ok := t.pending[id]; ok {
		prev = p.Prev // not written yet: the batch still finds the one before
	}
	t.pending[id] = store.Touch{WorkerID: id, Prev: prev, At: now, LastCheck: req.Health.CheckedAt}
	e.at = now
	t.last[id] = e
	return true
}

// wroteBeat notes a heartbeat of worker id written in full at now: its next one may be idle when it ran
// nothing and was told to cancel nothing.
func (s *Server) wroteBeat(id string, tokenHash []byte, req api.HeartbeatRequest, now time.Time, reply store.HeartbeatReply) {
	t := s.touch
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, id) // older than what was written
	if len(req.Running) > 0 || len(reply.Cancel) > 0 {
		delete(t.last, id)
		return
	}
	if len(t.last) >= maxAuthed { // a bound, not a policy, as the worker cache's
		clear(t.last)
	}
	t.last[id] = lastBeat{sum: beatSum(req), at: now, tokenHash: string(tokenHash)}
}

// flushTouches writes the queued idle heartbeats in one batch, and forgets the workers it could not touch
// (their next heartbeat is written in full) after refreshing the others' cached drain requests.
func (s *Server) flushTouches(ctx context.Context) {
	t := s.touch
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	t.mu.Lock()
	if len(t.pending) == 0 {
		t.mu.Unlock()
		return
	}
	batch := make([]store.Touch, 0, len(t.pending))
	for _, x := range t.pending {
		batch = append(batch, x)
	}
	clear(t.pending)
	t.mu.Unlock()
	slices.SortFunc(batch, func(a, b store.Touch) int { return cmp.Compare(a.WorkerID, b.WorkerID) })
	drains, err := s.st.TouchWorkers(ctx, batch)
	if err != nil {
		s.log.WithError(err).Warn("writing idle heartbeats: their workers' next heartbeats are written one by one")
	}
	refresh := map[string]bool{} // token hash -> drain requested
	t.mu.Lock()
	for _, x := range batch {
		e, ok := t.last[x.WorkerID]
		if !ok || !e.at.Equal(x.At) {
			continue // written or queued again since
		}
		if drain, touched := drains[x.WorkerID]; touched {
			refresh[e.tokenHash] = drain
		} else {
			delete(t.last, x.WorkerID)
		}
	}
	t.mu.Unlock()
	s.authMu.Lock()
	for h, drain := range refresh {
		if e, ok := s.authed[h]; ok && e.w.DrainRequested != drain {
			e.w.DrainRequested = drain
			s.authed[h] = e
		}
	}
	s.authMu.Unlock()
}

// writeTouches writes idle heartbeats every touchEvery until ctx ends, and those queued then.
func (s *Server) writeTouches(ctx context.Context) {
	every := max(time.Millisecond, min(touchEvery, s.cfg.HeartbeatInterval/10))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushTouches(context.WithoutCancel(ctx))
			return
		case <-tick.C:
			s.flushTouches(ctx)
		}
	}
}
