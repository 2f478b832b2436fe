// Package wake wakes goroutines of one dispatch server process that wait for something to happen: a lease
// long-poll waiting for a claimable operation of its pools (Queue), and a log follower waiting for more lines
// of one operation (Broadcast). It only signals; the waiter re-reads the store. Several server replicas would
// need the database to carry these signals (Postgres LISTEN/NOTIFY); until then each waiter also re-checks
// on a slow timer, so a signal from another process is late, never lost.
package wake

import "sync"

// Ticket announces one newly claimable operation.
type Ticket struct {
	ID           string
	Pool         string
	Capabilities []string
}

// Queue hands each announced operation to one waiting long-poller that can take it (its pools include the
// operation's pool and it has every required capability), oldest waiter first. Waking one waiter per
// operation, not all of them, keeps a burst of submissions from turning into a stampede of claim attempts.
//
// A waiter that wakes but leaves without claiming the announced operation (its poll ended, or it claimed an
// older one) passes the ticket on with Done, so an announced operation never waits for the slow timer while
// another waiter could take it.
type Queue struct {
	mu      sync.Mutex
	waiters []*Waiter // registration order
}

// Waiter is one registered long-poller.
type Waiter struct {
	q       *Queue
	pools   map[string]bool
	caps    map[string]bool
	c       chan struct{}
	pending []Ticket // guarded by q.mu
}

// NewQueue returns an empty Queue.
func NewQueue() *Queue { return &Queue{} }

// Wait registers a waiter for operations of pools that need at most caps. Register before the first claim
// attempt, so nothing announced between that attempt and the wait is missed; call Done when leaving.
func (q *Queue) Wait(pools, caps []string) *Waiter {
	w := &Waiter{q: q, pools: set(pools), caps: set(caps), c: make(chan struct{}, 1)}
	q.mu.Lock()
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	return w
}

func set(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

func (w *Waiter) takes(t Ticket) bool {
	if !w.pools[t.Pool] {
		return false
	}
	for _, c := range t.Capabilities {
		if !w.caps[c] {
			return false
		}
	}
	return true
}

// C receives when a ticket was handed to this waiter.
func (w *Waiter) C() <-chan struct{} { return w.c }

// Take returns and clears the tickets handed to this waiter. Call it after waking and before the claim
// attempt: if the attempt then finds nothing, those operations were claimed by someone else.
func (w *Waiter) Take() []Ticket {
	w.q.mu.Lock()
	defer w.q.mu.Unlock()
	t := w.pending
	w.pending = nil
	return t
}

// Done unregisters the waiter. claimed is the id of the operation it leased ("" for none); unclaimed lists
// tickets it took but did not act on (an older operation was claimed instead). Those and any tickets still
// pending are handed to other waiters.
func (w *Waiter) Done(claimed string, unclaimed []Ticket) {
	q := w.q
	q.mu.Lock()
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			break
		}
	}
	pass := append(unclaimed, w.pending...)
	w.pending = nil
	for _, t := range pass {
		if t.ID != claimed {
			q.notifyLocked(t)
		}
	}
	q.mu.Unlock()
}

// Notify announces a newly claimable operation: the oldest waiter that can take it and holds no ticket yet
// wakes; if all such waiters hold tickets, the oldest of them gets another. With no such waiter the ticket is
// dropped: a waiter that registers later claims before it sleeps.
func (q *Queue) Notify(t Ticket) {
	q.mu.Lock()
	q.notifyLocked(t)
	q.mu.Unlock()
}

func (q *Queue) notifyLocked(t Ticket) {
	var fallback *Waiter
	for _, w := range q.waiters {
		if !w.takes(t) {
			continue
		}
		if len(w.pending) == 0 {
			w.give(t)
			return
		}
		if fallback == nil {
			fallback = w
		}
	}
	if fallback != nil {
		fallback.give(t)
	}
}

func (w *Waiter) give(t Ticket) {
	w.pending = append(w.pending, t)
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// Waiting returns how many waiters are registered (for tests and metrics).
func (q *Queue) Waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiters)
}

// Broadcast wakes every follower of a key (an operation id) when it changes.
type Broadcast struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// NewBroadcast returns an empty Broadcast.
func NewBroadcast() *Broadcast { return &Broadcast{m: map[string]chan struct{}{}} }

// Watch returns a channel that is closed at the next Signal of key. Take it before reading the state it
// guards, so a change committed after the read is not missed.
func (b *Broadcast) Watch(key string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.m[key]
	if !ok {
		c = make(chan struct{})
		b.m[key] = c
	}
	return c
}

// Signal wakes the current watchers of key.
func (b *Broadcast) Signal(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.m[key]; ok {
		close(c)
		delete(b.m, key)
	}
}
