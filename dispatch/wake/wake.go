// Package wake wakes goroutines of one dispatch server process that wait for something to happen: a lease
// long-poll waiting for a claimable operation of its pools (Queue), and a log follower waiting for more lines
// of one operation (Broadcast). It only signals; the waiter re-reads the store. Between several server
// processes on one database a Bus (signal.go) carries the same wake-ups; each waiter also re-checks on a slow
// timer, so a signal lost on the way is late, never lost.
package wake

import (
	"slices"
	"sync"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Ticket announces one newly claimable operation.
type Ticket struct {
	ID           string
	Pool         string
	Capabilities []string
	Profile      string // the pod profile it names ("" for none)
}

// Queue hands each announced operation to one waiting long-poller that can take it (its pools include the
// operation's pool and it has every required capability), oldest waiter first. Waking one waiter per
// operation, not all of them, keeps a burst of submissions from turning into a stampede of claim attempts.
//
// A waiter that wakes but leaves without claiming the announced operation (its poll ended, or it claimed an
// older one) passes the ticket on with Done, so an announced operation never waits for the slow timer while
// another waiter could take it.
//
// D is what a waiter offers for a direct hand-off (the server: who waits, and the lease it would be given); V
// is what a hand-off delivers to it (the server: the granted lease).
type Queue[D, V any] struct {
	mu      sync.Mutex
	waiters []*Waiter[D, V] // registration order
}

// Waiter is one registered long-poller.
type Waiter[D, V any] struct {
	q     *Queue[D, V]
	offer store.Offer
	c     chan struct{}
	// Data is what the waiter's owner attached at Wait (the server: who waits, for a hand-off).
	Data D
	done <-chan struct{} // the waiter's request ended: never reserve it

	// guarded by q.mu
	pending      []Ticket
	idle         bool          // asleep in its wait, so it can take a hand-off (see Idle, Busy)
	reserved     bool          // taken out of the queue by Reserve; Deliver or Release follows
	delivered    V             // what Deliver handed over, when hasDelivered
	hasDelivered bool          // a delivery waits to be taken
	settled      chan struct{} // closed by Deliver or Release
	left         bool          // Done was called
}

// NewQueue returns an empty Queue.
func NewQueue[D, V any]() *Queue[D, V] { return &Queue[D, V]{} }

// Wait registers a waiter for operations of pools that need at most caps. Register before the first claim
// attempt, so nothing announced between that attempt and the wait is missed; call Done when leaving. data
// is kept in Waiter.Data; done (the request's context) closes when the waiter can no longer take a hand-off.
func (q *Queue[D, V]) Wait(pools, caps []string, data D, done <-chan struct{}) *Waiter[D, V] {
	return q.WaitFor(store.Offer{Pools: pools, Capabilities: caps}, data, done)
}

// WaitFor is Wait for a worker that offers o (pools, capabilities, pod profiles).
func (q *Queue[D, V]) WaitFor(o store.Offer, data D, done <-chan struct{}) *Waiter[D, V] {
	o = store.Offer{Pools: slices.Clone(o.Pools), Capabilities: slices.Clone(o.Capabilities), Profiles: slices.Clone(o.Profiles)}
	w := &Waiter[D, V]{q: q, offer: o, c: make(chan struct{}, 1), Data: data, done: done}
	q.mu.Lock()
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	return w
}

// takes says whether the waiter can take t's operation, by the rule a claim follows too.
func (w *Waiter[D, V]) takes(t Ticket) bool {
	return w.offer.Takes(t.Pool, t.Capabilities, t.Profile)
}

// C receives when a ticket was handed to this waiter.
func (w *Waiter[D, V]) C() <-chan struct{} { return w.c }

// Take returns and clears the tickets handed to this waiter. Call it after waking and before the claim
// attempt: if the attempt then finds nothing, those operations were claimed by someone else.
func (w *Waiter[D, V]) Take() []Ticket {
	w.q.mu.Lock()
	defer w.q.mu.Unlock()
	t := w.pending
	w.pending = nil
	return t
}

// Done unregisters the waiter. claimed is the id of the operation it leased ("" for none); unclaimed lists
// tickets it took but did not act on (an older operation was claimed instead). Those and any tickets still
// pending are handed to other waiters. If a Reserve took the waiter, Done waits for the Deliver or Release
// that follows. It returns what was delivered and not yet taken with Delivered: the caller must pass it on
// (it is a granted lease); ok is false when nothing was.
func (w *Waiter[D, V]) Done(claimed string, unclaimed []Ticket) (v V, ok bool) {
	q := w.q
	q.mu.Lock()
	w.left = true
	q.removeLocked(w)
	pass := append(unclaimed, w.pending...)
	w.pending = nil
	for _, t := range pass {
		if t.ID != claimed {
			q.notifyLocked(t)
		}
	}
	reserved, settled := w.reserved, w.settled
	q.mu.Unlock()
	if reserved {
		<-settled
	}
	return w.Delivered()
}

func (q *Queue[D, V]) removeLocked(w *Waiter[D, V]) {
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			return
		}
	}
}

// Delivered returns (and clears) what a Deliver handed to this waiter; ok is false when there is nothing.
func (w *Waiter[D, V]) Delivered() (v V, ok bool) {
	w.q.mu.Lock()
	defer w.q.mu.Unlock()
	v, ok = w.delivered, w.hasDelivered
	var zero V
	w.delivered, w.hasDelivered = zero, false
	return v, ok
}

// Idle marks the waiter as asleep, so Reserve may hand it an operation. Call it right before waiting on C.
func (w *Waiter[D, V]) Idle() {
	w.q.mu.Lock()
	w.idle = true
	w.q.mu.Unlock()
}

// Busy marks the waiter as working (not reservable) before it claims. If a hand-off is under way or done,
// Busy waits for it and returns what was delivered (ok false when the hand-off was released): the caller
// passes it on instead of claiming.
func (w *Waiter[D, V]) Busy() (v V, ok bool) {
	q := w.q
	q.mu.Lock()
	w.idle = false
	reserved, settled := w.reserved, w.settled
	q.mu.Unlock()
	if reserved {
		<-settled
	}
	return w.Delivered()
}

// Reserve takes the oldest idle waiter that can take an operation of pool needing caps (asleep, no tickets
// pending, request still open) out of the queue, for a direct hand-off: the caller leases the operation to
// it and then must call Deliver, or Release if that failed. It returns nil when no waiter fits.
func (q *Queue[D, V]) Reserve(pool string, caps []string) *Waiter[D, V] {
	return q.ReserveFor(Ticket{Pool: pool, Capabilities: caps})
}

// ReserveFor is Reserve for the operation t announces (its pool, capabilities and profile).
func (q *Queue[D, V]) ReserveFor(t Ticket) *Waiter[D, V] {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, w := range q.waiters {
		if !w.idle || w.reserved || len(w.pending) > 0 || w.hasDelivered || !w.takes(t) {
			continue
		}
		select {
		case <-w.done:
			continue
		default:
		}
		q.removeLocked(w)
		w.reserved, w.idle, w.settled = true, false, make(chan struct{})
		return w
	}
	return nil
}

// Deliver hands v (a lease) to a reserved waiter and wakes it.
func (w *Waiter[D, V]) Deliver(v V) {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	w.delivered, w.hasDelivered, w.reserved = v, true, false
	close(w.settled)
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// Release returns a reserved waiter to the queue (the hand-off failed); it goes back to waiting.
func (w *Waiter[D, V]) Release() {
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	w.reserved = false
	close(w.settled)
	if !w.left {
		q.waiters = append(q.waiters, w)
	}
}

// Notify announces a newly claimable operation: the oldest waiter that can take it and holds no ticket yet
// wakes; if all such waiters hold tickets, the oldest of them gets another. With no such waiter the ticket is
// dropped: a waiter that registers later claims before it sleeps.
func (q *Queue[D, V]) Notify(t Ticket) {
	q.mu.Lock()
	q.notifyLocked(t)
	q.mu.Unlock()
}

// WakeWhere wakes every waiter whose Data match, without a ticket, to claim again: something only they may
// claim was queued (an operation targeted at their worker), or they may claim again (their worker's slot
// freed).
func (q *Queue[D, V]) WakeWhere(match func(D) bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, w := range q.waiters {
		if match(w.Data) {
			select {
			case w.c <- struct{}{}:
			default:
			}
		}
	}
}

func (q *Queue[D, V]) notifyLocked(t Ticket) {
	var fallback *Waiter[D, V]
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

func (w *Waiter[D, V]) give(t Ticket) {
	w.pending = append(w.pending, t)
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// waiting returns how many waiters are registered (for the tests).
func (q *Queue[D, V]) waiting() int {
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

// SignalAll wakes every watcher of every key (signals may have been missed: each re-reads once).
func (b *Broadcast) SignalAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, c := range b.m {
		close(c)
		delete(b.m, key)
	}
}
