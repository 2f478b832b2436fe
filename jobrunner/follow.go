package jobrunner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// podLogs opens a pod container's log stream (the real implementation is the kube API's GetLogs).
type podLogs interface {
	Open(ctx context.Context, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error)
}

type kubeLogs struct {
	kube      kubernetes.Interface
	namespace string
}

func (k kubeLogs) Open(ctx context.Context, pod string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	return k.kube.CoreV1().Pods(k.namespace).GetLogs(pod, opts).Stream(ctx)
}

// follower reads one pod's sealed runner records in order, exactly once: it drops sequence numbers it has
// already passed on, resumes a dropped stream from the last kubelet timestamp (sinceTime), and re-reads the
// whole log when it sees a gap.
type follower struct {
	logs   podLogs
	pod    string
	sealer *logline.Sealer

	offset    int64     // added to the runner's numbers: lines delivered from earlier pods of the Job
	delivered int64     // highest seq passed to emit
	lastTime  time.Time // kubelet timestamp of the last line read
	buf       []byte    // scratch for opening records
	rereading bool      // a gap was seen after gapAt and a full re-read is under way
	gapAt     int64
	// ask, when the pod can push, waits (bounded) until the server holds lines up to want (podpush.go).
	ask  func(want int64) (api.AppendLogsResponse, bool)
	lost string // what was said of lines lost for good (result.go reports it)
	// eos is the end-of-stream marker once read. The follower's goroutine sets it while the operation's loop
	// looks at it (the judge's observation), hence atomic.
	eos atomic.Pointer[logline.Line]
}

// marker returns the end-of-stream marker, or nil before it is read.
func (f *follower) marker() *logline.Line { return f.eos.Load() }

// rereadFrom reads the whole log again, passing on only the lines after held (what the server holds): the
// server lost lines it had acknowledged, or never got them.
func (f *follower) rereadFrom(ctx context.Context, held int64, emit func(api.LogLine) error) error {
	f.delivered = held
	f.eos.Store(nil)
	return f.stream(ctx, false, true, emit)
}

// gapRead ends a re-read that a gap started: the next gap starts another.
func (f *follower) gapRead() { f.rereading = false }

// errGap ends a stream that skipped sequence numbers; the caller re-reads from the start.
var errGap = errors.New("gap in sequence numbers")

// stream reads the log once, from sinceTime (or the start when fromStart), until it ends, the marker is read,
// or a gap is seen. emit receives every new line in order (and system lines about unreadable ones).
func (f *follower) stream(ctx context.Context, follow, fromStart bool, emit func(api.LogLine) error) error {
	opts := &corev1.PodLogOptions{Container: ScriptContainerName, Follow: follow, Timestamps: true}
	if !fromStart && !f.lastTime.IsZero() {
		// sinceTime has whole-second precision on the wire: the lines of that second come again and are
		// dropped by sequence number.
		opts.SinceTime = &metav1.Time{Time: f.lastTime}
	}
	rc, err := f.logs.Open(ctx, f.pod, opts)
	if err != nil {
		return fmt.Errorf("opening log of pod %s: %w", f.pod, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	for {
		raw, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Not a runner record (those are shorter); skip the rest of the line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if e := emit(systemLine("the pod printed an overlong line that is not a runner record; skipped")); e != nil {
				return e
			}
			continue
		}
		if len(raw) > 0 {
			if e := f.handle(bytes.TrimRight(raw, "\r\n"), emit); e != nil || f.marker() != nil {
				return e
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading log of pod %s: %w", f.pod, err)
		}
	}
}

func (f *follower) handle(raw []byte, emit func(api.LogLine) error) error {
	ts, rec, ok := bytes.Cut(raw, []byte{' '})
	if !ok {
		rec, ts = raw, nil
	}
	if t, err := logline.ParseTime(ts); err == nil {
		f.lastTime = t
	} else {
		rec = raw
	}
	var l logline.Line
	var err error
	l, f.buf, err = f.sealer.ParseTo(f.buf, rec)
	l.Seq += f.offset
	switch {
	case errors.Is(err, logline.ErrNotRecord):
		// Output from outside the runner (a runner that could not start prints its reason here). It is
		// not sealed, so it is shown as the pod printed it.
		if len(rec) == 0 {
			return nil
		}
		return emit(systemLine("pod: " + string(rec)))
	case err != nil:
		return emit(systemLine("a log line could not be opened and was dropped: " + err.Error()))
	}
	if l.Stream == logline.EOS {
		if l.Seq > f.delivered {
			if err := f.gap(l.Seq+1, emit); err != nil {
				return err
			}
		}
		eos := l
		eos.Payload = bytes.Clone(l.Payload) // l's lies in f.buf
		f.eos.Store(&eos)
		return nil
	}
	if l.Seq <= f.delivered {
		return nil // already delivered (a resumed or re-read stream)
	}
	if l.Seq > f.delivered+1 {
		if err := f.gap(l.Seq, emit); err != nil {
			return err
		}
	}
	if err := emit(api.LogLine{Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: string(l.Payload)}); err != nil {
		return err
	}
	f.delivered = l.Seq
	return nil
}

// gap handles a record numbered next when f.delivered+1 was expected: the first time it returns errGap so
// the caller re-reads from the start; when the re-read shows the same hole, the lines are gone from the pod's
// log (rotated away or lost by the runtime): it says so in the log, skips them and returns nil.
func (f *follower) gap(next int64, emit func(api.LogLine) error) error {
	if !f.rereading || f.gapAt != f.delivered {
		f.rereading, f.gapAt = true, f.delivered
		return errGap
	}
	msg := fmt.Sprintf("lines %d to %d are missing from the pod's log (rotated away or lost by the container runtime) and cannot be delivered", f.delivered+1, next-1)
	if f.ask != nil {
		if resp, _ := f.ask(next - 1); resp.LastSeq >= next-1 {
			f.rereading = false // the pod pushed them: go on after what the server holds
			f.delivered = max(f.delivered, resp.LastSeq)
			return nil
		}
		msg += "; the pod could not push them to the server either"
	}
	f.lost = msg
	if err := emit(systemLine(msg)); err != nil {
		return err
	}
	f.rereading = false
	f.delivered = next - 1
	return nil
}

func systemLine(text string) api.LogLine {
	return api.LogLine{Seq: 0, Time: time.Now().UTC(), Stream: api.StreamSystem, Text: text}
}
