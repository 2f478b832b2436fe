package jobrunner

import (
	"context"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// gapWait is how long a follower at a hole in the pod log waits for the server's log to move while the pod
// may still push the missing lines (the pod pushes once the server's log has not moved for 5 s).
const gapWait = 30 * time.Second

// askServer returns the follower's way to learn what the pod pushed (PROTOCOL.md, "The script pod's
// channel"): it waits until the server holds lines up to want contiguously, while the server's log keeps
// moving within gapWait, and returns the server's answer (ok false when it never answered).
func (o *operation) askServer(ctx context.Context) func(want int64) (api.AppendLogsResponse, bool) {
	return func(want int64) (api.AppendLogsResponse, bool) {
		var last api.AppendLogsResponse
		answered := false
		moved := time.Now()
		for {
			resp, err := o.deps.d.AppendLogs(ctx, o.id, o.lease.LeaseID, nil) // an empty batch asks
			if err == nil {
				if !answered || resp.LastSeq > last.LastSeq {
					moved = time.Now()
				}
				last, answered = resp, true
			}
			if (answered && last.LastSeq >= want) || time.Since(moved) >= gapWait || ctx.Err() != nil {
				return last, answered
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// podEnd takes the end-of-stream marker from the server when the pod log ended without one and the pod pushed
// it, with the lines the server holds up to it.
func (f *follower) podEnd() {
	if f.ask == nil || f.marker() != nil {
		return
	}
	resp, ok := f.ask(0)
	if !ok || resp.PodEnd == nil || resp.LastSeq < resp.PodEnd.Seq+f.offset {
		return
	}
	f.delivered = max(f.delivered, resp.LastSeq)
	f.eos.Store(&logline.Line{Seq: resp.PodEnd.Seq + f.offset, Time: time.Now(), Stream: logline.EOS,
		Payload: []byte(strconv.Itoa(resp.PodEnd.ExitCode))})
}
