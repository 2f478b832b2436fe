package jobrunner

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Shipping bounds. While the server is unreachable an operation keeps at most maxPendingBytes (text plus a
// fixed per-line overhead) or maxPendingLines of unacknowledged lines; beyond that the log reader waits, which
// is safe because the pod's log still holds the lines. With the per-line cap of logline.MaxPayload this bounds
// the agent's log memory to about 1 MiB per running operation. Batches stay within the server's limits
// (5,000 lines, 4 MiB).
const (
	maxPendingBytes = 1 << 20
	maxPendingLines = 20000
	maxBatchLines   = 5000
	maxBatchBytes   = 1 << 20
	lineOverhead    = 64
	shipLinger      = 50 * time.Millisecond // wait this long for more lines before sending a small batch
)

// logAppender is the part of the Dispatcher the shipper uses.
type logAppender interface {
	AppendLogs(ctx context.Context, operationID, leaseID string, lines []api.LogLine) (api.AppendLogsResponse, error)
}

// shipper sends one operation's lines to the server in order, in batches, keeping every line until the server
// has acknowledged it and retrying with back-off while the server fails.
type shipper struct {
	d           logAppender
	operationID string
	leaseID     string
	log         *logrus.Entry

	mu       sync.Mutex
	pending  []api.LogLine // unacknowledged lines, in order
	bytes    int
	inFlight bool
	stored   int64         // highest contiguous seq the server said it holds
	err      error         // permanent refusal: shipping stopped
	changed  chan struct{} // closed and replaced whenever pending shrinks or err is set
	failed   chan struct{} // closed when shipping stopped for good (err set)
	data     chan struct{} // signalled (buffer 1) when lines are added
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
	for s.err == nil && len(s.pending) > 0 && (s.bytes+lineSize(l) > maxPendingBytes || len(s.pending) >= maxPendingLines) {
		ch := s.changed
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
	s.pending = append(s.pending, l)
	s.bytes += lineSize(l)
	select {
	case s.data <- struct{}{}:
	default:
	}
	return nil
}

// Flush waits until every queued line is acknowledged, and returns the highest contiguous seq the server holds.
func (s *shipper) Flush(ctx context.Context) (int64, error) {
	for {
		s.mu.Lock()
		if s.err != nil || (len(s.pending) == 0 && !s.inFlight) {
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

// Stored returns the highest contiguous seq the server acknowledged.
func (s *shipper) Stored() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored
}

// Run sends batches until ctx ends.
func (s *shipper) Run(ctx context.Context) {
	for {
		select {
		case <-s.data:
		case <-ctx.Done():
			return
		}
		// Let a burst accumulate into one batch.
		t := time.NewTimer(shipLinger)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
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
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return
				}
				backoff = min(2*backoff, 10*time.Second)
				continue
			}
			backoff = 100 * time.Millisecond
			s.done(len(batch), resp, nil)
		}
	}
}

// head marks a batch from the front of the queue as in flight and returns a copy of it.
func (s *shipper) head() []api.LogLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, size := 0, 0
	for n < len(s.pending) && n < maxBatchLines && (n == 0 || size+lineSize(s.pending[n]) <= maxBatchBytes) {
		size += lineSize(s.pending[n])
		n++
	}
	s.inFlight = n > 0
	return append([]api.LogLine(nil), s.pending[:n]...)
}

// done records the outcome of a batch: n lines acknowledged (0 on failure).
func (s *shipper) done(n int, resp api.AppendLogsResponse, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.pending[:n] {
		s.bytes -= lineSize(l)
	}
	s.pending = append(s.pending[:0:0], s.pending[n:]...)
	if n > 0 {
		if resp.LastSeq > s.stored {
			s.stored = resp.LastSeq
		}
		if resp.Gap {
			s.log.WithField("last_seq", resp.LastSeq).Warn("dispatch server reports a gap after the lines it holds")
		}
	}
	s.inFlight = false
	if err != nil && s.err == nil {
		s.err = err
		close(s.failed)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}
