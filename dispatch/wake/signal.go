package wake

import "context"

// Kind says what a Signal announces.
type Kind uint8

// The kinds of Signal: each is what a waiter on another server process waits for.
const (
	// Ready: an operation became claimable (submitted, a deployment's next step, re-queued). Ticket says which.
	Ready Kind = iota + 1
	// Lines: lines were appended to operation ID; its log followers re-read.
	Lines
	// Ended: operation ID reached a terminal state; its log followers send the end.
	Ended
	// Worker: worker ID may claim again (its slot freed, or an operation only it may take was queued); its lease
	// long-polls claim again.
	Worker
	// Removed: worker ID was removed; its lease long-polls end.
	Removed
	// All: signals may have been missed (the listener (re)connected, or a publish failed): every waiter
	// re-checks once.
	All
)

// Signal is one wake-up that crosses server processes.
type Signal struct {
	Kind   Kind
	Ticket Ticket // Ready
	ID     string // Lines, Ended: the operation; Worker, Removed: the worker
}

// Bus carries signals between the server processes that share one database (PostgreSQL's LISTEN/NOTIFY). A
// store that several processes can share offers one (see the server); SQLite serves one process and has none.
//
// A signal only wakes: the waiter re-reads the store. So a lost signal delays a waiter until its slow
// re-check, and never loses work; and Listen hears All whenever it may have missed some.
type Bus interface {
	// Publish sends sigs to the other processes' Listen, after the changes they announce are committed. One
	// call is one round trip, however many signals.
	Publish(ctx context.Context, sigs []Signal) error
	// Listen calls hear with each signal another process publishes, until ctx ends (it returns nil then). It
	// calls hear(Signal{Kind: All}) each time it starts listening (at start and after a lost connection),
	// because signals published while it was not listening are lost. Calls of hear do not overlap.
	Listen(ctx context.Context, hear func(Signal)) error
}
