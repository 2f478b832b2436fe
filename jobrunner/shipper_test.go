package jobrunner

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// recordingAppender stands in for the dispatch server's log endpoint in these unit tests of the shipper's own
// logic (ordering, retry, bound); the e2e tests ship through the real server.
type recordingAppender struct {
	mu      sync.Mutex
	failN   int           // fail this many calls first
	gate    chan struct{} // when non-nil, each call waits for it
	got     []api.LogLine
	batches int
	discard bool // keep no lines (benchmarks)
}

func (r *recordingAppender) AppendLogs(ctx context.Context, _, _ string, lines []api.LogLine) (api.AppendLogsResponse, error) {
	req := api.AppendLogsRequest{Lines: lines}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return api.AppendLogsResponse{}, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failN > 0 {
		r.failN--
		return api.AppendLogsResponse{}, errors.New("503 service unavailable")
	}
	r.batches++
	if !r.discard {
		r.got = append(r.got, req.Lines...)
	}
	return api.AppendLogsResponse{LastSeq: req.Lines[len(req.Lines)-1].Seq}, nil
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// startShipper runs a shipper to app until the test ends. Inside a synctest bubble its time is the bubble's:
// synctest.Wait returns once the sender and every producer block, and the linger and back-off pass only
// when everything waits on them.
func startShipper(t *testing.T, app logAppender) (*shipper, context.Context) {
	s := newShipper(app, "op", "lease", 0, quietLog())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, ctx
}

func TestShipperDeliversInOrderThroughFailures(t *testing.T) {
	t.Parallel()
	synctest.Test(t, testShipperDeliversInOrderThroughFailures) // the back-off passes in the bubble's time
}

func testShipperDeliversInOrderThroughFailures(t *testing.T) {
	app := &recordingAppender{failN: 3}
	s, ctx := startShipper(t, app)
	const n = 5000
	for i := 1; i <= n; i++ {
		if err := s.Add(ctx, api.LogLine{Seq: int64(i), Stream: "stdout", Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := s.Flush(ctx)
	if err != nil || stored != n {
		t.Fatalf("Flush = %d, %v; want %d", stored, err, n)
	}
	if len(app.got) != n {
		t.Fatalf("server got %d lines, want %d", len(app.got), n)
	}
	for i, l := range app.got {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d", i+1, l.Seq)
		}
	}
	if app.batches >= n/10 {
		t.Errorf("%d requests for %d lines: not batching", app.batches, n)
	}
}

func TestShipperBoundsMemory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, testShipperBoundsMemory)
}

func testShipperBoundsMemory(t *testing.T) {
	app := &recordingAppender{gate: make(chan struct{})}
	s, ctx := startShipper(t, app)
	text := strings.Repeat("y", 1000)
	added := make(chan int, 1)
	go func() {
		i := 0
		for ; i < 10*maxPendingBytes/1000; i++ {
			if s.Add(ctx, api.LogLine{Seq: int64(i + 1), Text: text}) != nil {
				break
			}
		}
		added <- i
	}()
	// The producer must block with at most the bound queued while the server does not answer: once every
	// goroutine blocks, the queue is full and no fuller.
	synctest.Wait()
	s.mu.Lock()
	b := s.bytes
	s.mu.Unlock()
	if b > maxPendingBytes {
		t.Fatalf("queued %d bytes, bound is %d", b, maxPendingBytes)
	}
	if b <= maxPendingBytes-2*(len(text)+lineOverhead) {
		t.Fatalf("queue never filled (%d bytes)", b)
	}
	select {
	case n := <-added:
		t.Fatalf("producer finished (%d lines) while the server was blocked", n)
	default:
	}
	close(app.gate) // the server answers again: everything drains
	n := <-added
	if _, err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(app.got) != n {
		t.Errorf("server got %d lines, want %d", len(app.got), n)
	}
}

// scriptedLogs serves pre-made pod logs: each Open returns the next entry (the last one repeats).
type scriptedLogs struct {
	mu    sync.Mutex
	logs  []string
	opens []*corev1.PodLogOptions
}

func (s *scriptedLogs) Open(_ context.Context, _ string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := min(len(s.opens), len(s.logs)-1)
	s.opens = append(s.opens, opts)
	return io.NopCloser(strings.NewReader(s.logs[i])), nil
}

func records(t *testing.T, s *logline.Sealer, seqs ...int64) string {
	t.Helper()
	var b strings.Builder
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, q := range seqs {
		l := logline.Line{Seq: q, Time: ts, Stream: logline.Stdout, Payload: []byte("line")}
		if q < 0 {
			l = logline.Line{Seq: -q, Time: ts, Stream: logline.EOS, Payload: []byte("0")}
		}
		rec, err := s.Append(nil, l)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(ts.Add(time.Duration(q) * time.Millisecond).Format(time.RFC3339Nano))
		b.WriteByte(' ')
		b.Write(rec)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestFollower(t *testing.T) {
	t.Parallel()
	key, _ := logline.NewKey()
	s, _ := logline.NewSealer(key, "op")
	tests := []struct {
		name      string
		delivered int64
		logs      []string
		wantSeqs  []int64
		wantSys   int  // system lines
		resumed   bool // the second read resumes where the first ended (sinceTime), not from the start
	}{
		{name: "plain", logs: []string{records(t, s, 1, 2, 3, -3)}, wantSeqs: []int64{1, 2, 3}},
		{name: "resume drops delivered", delivered: 2, logs: []string{records(t, s, 1, 2, 3, -3)}, wantSeqs: []int64{3}},
		{name: "dropped stream resumes", logs: []string{records(t, s, 1, 2), records(t, s, 2, 3, -3)}, wantSeqs: []int64{1, 2, 3}, resumed: true},
		{name: "gap re-read", logs: []string{records(t, s, 1, 3), records(t, s, 1, 2, 3, -3)}, wantSeqs: []int64{1, 2, 3}},
		{name: "gap that stays is reported", logs: []string{records(t, s, 1, 4, -4)}, wantSeqs: []int64{1, 4}, wantSys: 1},
		{name: "foreign lines become system lines", logs: []string{"2026-01-01T00:00:00Z runner: cannot read spec\n" + records(t, s, 1, -1)}, wantSeqs: []int64{1}, wantSys: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &scriptedLogs{logs: tc.logs}
			f := &follower{logs: logs, pod: "p", sealer: s, delivered: tc.delivered}
			var seqs []int64
			sys := 0
			emit := func(l api.LogLine) error {
				if l.Seq == 0 {
					sys++
				} else {
					seqs = append(seqs, l.Seq)
				}
				return nil
			}
			fromStart := true
			for i := 0; f.marker() == nil; i++ {
				if i > 5 {
					t.Fatal("no marker after 5 reads")
				}
				err := f.stream(context.Background(), true, fromStart, emit)
				fromStart = errors.Is(err, errGap)
				if err != nil && !fromStart {
					t.Fatal(err)
				}
			}
			if len(seqs) != len(tc.wantSeqs) {
				t.Fatalf("seqs = %v, want %v", seqs, tc.wantSeqs)
			}
			for i := range seqs {
				if seqs[i] != tc.wantSeqs[i] {
					t.Fatalf("seqs = %v, want %v", seqs, tc.wantSeqs)
				}
			}
			if sys != tc.wantSys {
				t.Errorf("%d system lines, want %d", sys, tc.wantSys)
			}
			if tc.resumed && (len(logs.opens) < 2 || logs.opens[1].SinceTime == nil) {
				t.Errorf("the stream was not resumed with sinceTime: reads %+v", logs.opens)
			}
		})
	}
}

// TestShipperSendsWithoutLingering: full batches, a full queue and Flush send at once, in order: by the time
// every goroutine blocks, the lines are sent and no time has passed. (A quiet log waits for the linger; these
// must not.)
func TestShipperSendsWithoutLingering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		lines int
		text  string
		flush bool
	}{
		{name: "full batches", lines: 3 * maxBatchLines, text: "x"},
		{name: "queue full of long lines", lines: 500, text: strings.Repeat("y", 8<<10)},
		{name: "flush of a few lines", lines: 3, text: "z", flush: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				app := &recordingAppender{}
				s, ctx := startShipper(t, app)
				start := time.Now()
				for i := 1; i <= tc.lines; i++ {
					if err := s.Add(ctx, api.LogLine{Seq: int64(i), Stream: "stdout", Text: tc.text}); err != nil {
						t.Fatalf("line %d: %v", i, err)
					}
					synctest.Wait() // the sender has seen this line: whether it sends cannot depend on when it runs
				}
				want := tc.lines // 3 full batches, or flushed
				if tc.text != "x" && !tc.flush {
					want -= maxPendingBytes / (len(tc.text) + lineOverhead) // what did not fill the queue again waits
				}
				if tc.flush {
					if stored, err := s.Flush(ctx); err != nil || stored != int64(tc.lines) {
						t.Fatalf("Flush = %d, %v", stored, err)
					}
				}
				synctest.Wait()
				app.mu.Lock()
				got := append([]api.LogLine(nil), app.got...)
				app.mu.Unlock()
				if len(got) < want {
					t.Fatalf("the server got %d lines, want at least %d without waiting for the linger", len(got), want)
				}
				for i, l := range got {
					if l.Seq != int64(i+1) {
						t.Fatalf("line %d has seq %d", i+1, l.Seq)
					}
				}
				if waited := time.Since(start); waited != 0 {
					t.Errorf("sending waited %s for a timer (the linger is %s)", waited, shipLinger)
				}
			})
		})
	}
}

// TestShipperLingersOnQuietLog: a few lines wait shipLinger for more, then go out without a Flush.
func TestShipperLingersOnQuietLog(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		app := &recordingAppender{}
		s, ctx := startShipper(t, app)
		for i := 1; i <= 3; i++ {
			if err := s.Add(ctx, api.LogLine{Seq: int64(i), Stream: "stdout", Text: "q"}); err != nil {
				t.Fatal(err)
			}
		}
		sent := func() int {
			synctest.Wait()
			app.mu.Lock()
			defer app.mu.Unlock()
			return len(app.got)
		}
		if n := sent(); n != 0 {
			t.Fatalf("%d lines sent before the linger passed", n)
		}
		time.Sleep(shipLinger - time.Nanosecond)
		if n := sent(); n != 0 {
			t.Fatalf("%d lines sent before the linger passed", n)
		}
		time.Sleep(time.Nanosecond)
		if n := sent(); n != 3 {
			t.Fatalf("%d lines sent once the linger passed, want 3", n)
		}
	})
}

// BenchmarkShipper: queueing n lines and flushing them to an appender that answers at once, per line.
func BenchmarkShipper(b *testing.B) {
	const n = 100000
	lines := make([]api.LogLine, n)
	for i := range lines {
		lines[i] = api.LogLine{Seq: int64(i + 1), Stream: api.StreamStdout, Text: strconv.Itoa(i + 1)}
	}
	for b.Loop() {
		app := &recordingAppender{discard: true}
		s := newShipper(app, "op", "lease", 0, quietLog())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		for _, l := range lines {
			if err := s.Add(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
		if stored, err := s.Flush(ctx); err != nil || stored != n {
			b.Fatalf("Flush = %d, %v", stored, err)
		}
		cancel()
		<-done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/line")
}

// TestShipperDropsBurstArrays: once a burst is delivered, the operation keeps no large queue arrays.
func TestShipperDropsBurstArrays(t *testing.T) {
	t.Parallel()
	s, ctx := startShipper(t, &recordingAppender{discard: true})
	for i := 1; i <= 3*maxBatchLines; i++ {
		if err := s.Add(ctx, api.LogLine{Seq: int64(i), Stream: "stdout", Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cap(s.queue) > keepLines || cap(s.batch) > keepLines {
		t.Errorf("after the burst the shipper keeps arrays of %d and %d lines", cap(s.queue), cap(s.batch))
	}
}
