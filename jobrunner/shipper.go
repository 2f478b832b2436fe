package jobrunner

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// Shipping bounds. While the server is unreachable an operation keeps at most maxPendingBytes (text plus a
// fixed per-line overhead) or maxPendingLines of unacknowledged lines; beyond that the log reader waits, which
// is safe because the pod's log still holds the lines. With the per-line cap of logline.MaxPayload this bounds
// the agent's log memory to about 1 MiB per running operation. Batches stay within the server's limits
// (5,000 lines, 4 MiB). A batch is sent when it is full, when the queue is full, when someone flushes, or
// shipLinger after the sender became free with lines queued, whichever comes first: a busy log goes out in
// full batches, a quiet one within shipLinger.
const (
	maxPendingBytes = 1 << 20
	maxPendingLines = 20000
	maxBatchLines   = api.MaxLogLines
	maxBatchBytes   = 1 << 20
	lineOverhead    = 64
	shipLinger      = 50 * time.Millisecond
)

// logAppender is the part of the Dispatcher the shipper uses. AppendLogs must not keep lines after it returns
// (the shipper reuses the slice).
type logAppender interface {
	AppendLogs(ctx context.Context, operationID, leaseID string, lines []api.LogLine) (api.AppendLogsResponse, error)
}

// shipper sends one operation's lines to the server in order, in batches, keeping every line until the server
// has acknowledged it and retrying with back-off while the server fails. One batch is in flight at a time:
// the server stores batches in the order they commit, and followers see lines in that order.
type shipper struct {
	d           logAppender
	operationID string
	leaseID     string
	log         *logrus.Entry
	metrics     *Metrics // counts the lines acknowledged; nil: none

	mu       sync.Mutex
	queue    []api.LogLine // queue[first:] are the unacknowledged lines, in order; the first inFlight of them are being sent
	first    int
	bytes    int
	inFlight int
	batch    []api.LogLine // the batch in flight (a copy: the queue moves)
	flushing int           // Flush calls waiting: send without lingering
	stored   int64         // highest contiguous seq the server said it holds
	added    int64         // lines ever queued
	acked    int64         // lines ever acknowledged
	err      error         // permanent refusal: shipping stopped
	changed  chan struct{} // closed and replaced whenever the queue shrinks or err is set
	failed   chan struct{} // closed when shipping stopped for good (err set)
	data     chan struct{} // signalled (buffer 1) when lines are queued to an idle queue or a batch is ready
}

func newShipper(d logAppender, operationID, leaseID string, stored int64, log *logrus.Entry) *shipper {
	return &shipper{
		d: d, operationID: operationID, leaseID: leaseID, stored: stored, log: log,
		changed: make(chan struct{}), data: make(chan struct{}, 1), failed: make(chan struct{}),
	}
}

func lineSize(l api.LogLine) int { return len(l.Text) + lineOverhead }

// Add queues a line, waiting while the queue is full.
func (s *shipper) Add(ctx context.Context, l api.LogLine) error {
	s.mu.Lock()
	for s.err == nil && s.queued() > 0 && s.full(lineSize(l)) {
		ch := s.changed
		s.signal() // the sender must not linger while a reader waits
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.push(l)
	s.added++
	s.bytes += lineSize(l)
	if unsent := s.queued() - s.inFlight; unsent == 1 || unsent == maxBatchLines {
		s.signal()
	}
	return nil
}

// backlog is the number of lines not acknowledged yet.
func (s *shipper) backlog() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued()
}

// queued is the number of unacknowledged lines. s.mu is held.
func (s *shipper) queued() int { return len(s.queue) - s.first }

// keepLines is the largest queue array kept once the queue is empty.
const keepLines = 1024

// push appends l to the queue. The queue's array grows to at most maxPendingLines (Add waits beyond); space
// freed at its front is reused by moving the queue back to the start when the array is full, so each line is
// moved at most once on average and a busy queue is not reallocated per batch. Once the queue is empty, a
// large array is dropped. s.mu is held.
func (s *shipper) push(l api.LogLine) {
	if len(s.queue) == cap(s.queue) {
		if s.first > 0 {
			n := copy(s.queue, s.queue[s.first:])
			clear(s.queue[n:])
			s.queue, s.first = s.queue[:n], 0
		} else {
			grown := make([]api.LogLine, len(s.queue), min(max(2*cap(s.queue), 64), maxPendingLines))
			copy(grown, s.queue)
			s.queue = grown
		}
	}
	s.queue = append(s.queue, l)
}

// full reports whether a line of size more would overflow the queue. s.mu is held.
func (s *shipper) full(size int) bool {
	return s.bytes+size > maxPendingBytes || s.queued() >= maxPendingLines
}

// ready reports whether the sender should send now rather than wait for more lines. s.mu is held.
func (s *shipper) ready() bool {
	return s.queued()-s.inFlight >= maxBatchLines || s.flushing > 0 || s.full(lineOverhead+logline.MaxPayload)
}

// signal wakes the sender. s.mu is held.
func (s *shipper) signal() {
	select {
	case s.data <- struct{}{}:
	default:
	}
}

// Flush waits until every queued line is acknowledged, and returns the highest contiguous seq the server holds.
func (s *shipper) Flush(ctx context.Context) (int64, error) {
	return s.await(ctx, func() bool { return s.queued() == 0 })
}

// Deliver waits until the lines queued before the call are acknowledged (not those queued meanwhile, which a
// busy log keeps adding), sending without lingering; it returns why shipping stopped, if it did.
func (s *shipper) Deliver(ctx context.Context) error {
	s.mu.Lock()
	target := s.added
	s.mu.Unlock()
	_, err := s.await(ctx, func() bool { return s.acked >= target })
	return err
}

// await sends without lingering until done (called with s.mu held) or shipping stops, and returns the highest
// contiguous seq the server holds and why shipping stopped, if it did.
func (s *shipper) await(ctx context.Context, done func() bool) (int64, error) {
	s.mu.Lock()
	s.flushing++
	s.signal()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.flushing--
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		if s.err != nil || done() {
			defer s.mu.Unlock()
			return s.stored, s.err
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Err returns why shipping stopped for good, or nil.
func (s *shipper) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Run sends batches until ctx ends.
func (s *shipper) Run(ctx context.Context) {
	for {
		select {
		case <-s.data:
		case <-ctx.Done():
			return
		}
		if !s.linger(ctx) {
			return
		}
		backoff := 100 * time.Millisecond
		for {
			batch := s.head()
			if len(batch) == 0 {
				break
			}
			resp, err := s.d.AppendLogs(ctx, s.operationID, s.leaseID, batch)
			if err != nil {
				if ctx.Err() != nil {
					s.done(0, resp, nil)
					return
				}
				if permanent(err) {
					s.log.WithError(err).Error("dispatch server refused log lines; shipping stopped")
					s.done(0, resp, fmt.Errorf("appending log lines: %w", err))
					return
				}
				s.log.WithError(err).WithField("retry_in", backoff).Warn("appending log lines failed; keeping them and retrying")
				s.done(0, resp, nil)
				if !backOff(ctx, &backoff, 10*time.Second) {
					return
				}
				continue
			}
			backoff = 100 * time.Millisecond
			s.done(len(batch), resp, nil)
			// Let the next batch fill up, unless it is ready.
			if !s.linger(ctx) {
				return
			}
		}
	}
}

// linger waits until a batch is ready or shipLinger has passed; false when ctx ended.
func (s *shipper) linger(ctx context.Context) bool {
	var t *time.Timer
	for {
		s.mu.Lock()
		ready := s.ready() || s.queued() == 0
		s.mu.Unlock()
		if ready {
			break
		}
		if t == nil {
			t = time.NewTimer(shipLinger)
			defer t.Stop()
		}
		select {
		case <-s.data:
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// head marks a batch from the front of the queue as in flight and returns a copy of it, valid until the next
// head.
func (s *shipper) head() []api.LogLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue[s.first:]
	n, size := 0, 0
	for n < len(q) && n < maxBatchLines && (n == 0 || size+lineSize(q[n]) <= maxBatchBytes) {
		size += lineSize(q[n])
		n++
	}
	s.inFlight = n
	s.batch = append(s.batch[:0], q[:n]...)
	return s.batch
}

// done records the outcome of a batch: n lines acknowledged (0 on failure).
func (s *shipper) done(n int, resp api.AppendLogsResponse, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	acked := s.queue[s.first : s.first+n]
	for _, l := range acked {
		s.bytes -= lineSize(l)
	}
	clear(acked) // the texts are garbage now (unless failed, the next head copies them again)
	clear(s.batch)
	s.first += n
	s.acked += int64(n)
	s.metrics.shipped(n)
	if s.first == len(s.queue) {
		s.queue, s.first = s.queue[:0], 0
		if cap(s.queue) > keepLines { // an idle operation does not keep a burst's arrays
			s.queue, s.batch = nil, nil
		}
	}
	if n > 0 {
		if resp.LastSeq > s.stored {
			s.stored = resp.LastSeq
		}
		if resp.Gap {
			s.log.WithField("last_seq", resp.LastSeq).Warn("dispatch server reports a gap after the lines it holds")
		}
	}
	s.inFlight = 0
	if err != nil && s.err == nil {
		s.err = err
		close(s.failed)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}
