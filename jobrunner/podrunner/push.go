package podrunner

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
)

// When the pod pushes (PROTOCOL.md, "The script pod's channel"). It asks the server how far it holds the log
// every pushCheck while the spool holds records the server may lack, and pushes those once the server's
// contiguous end has not moved for pushStall (the worker is away or stuck at a gap; a worker that keeps up
// moves it many times a second), or lags the spool by more than pushLag (more than the kubelet's rotated
// files hold by default, 5 x 10 MiB). Normally the worker keeps up and the pod pushes nothing.
const (
	pushCheck = time.Second
	pushStall = 5 * time.Second
	pushLag   = 64 << 20
	// drainCheck is how often the runner asks while it drains after the script exited.
	drainCheck = 200 * time.Millisecond
)

// DefaultDrainTimeout bounds the drain after the script exited unless the Spec says otherwise
// (Spec.DrainSeconds): the runner exits with the script's code then, whatever the server holds.
const DefaultDrainTimeout = 5 * time.Minute

// podServer is the server as the pusher sees it (dispatch/client.Pod).
type podServer interface {
	LogState(ctx context.Context) (api.PodLogState, error)
	PushLogs(ctx context.Context, records []string) (api.PodLogState, error)
}

// pusher delivers what the spool holds and the server lacks, and the end-of-stream marker.
type pusher struct {
	srv   podServer
	spool *spool
	check time.Duration // pushCheck, drainCheck: shorter in tests
	stall time.Duration
	drain time.Duration

	eos      string        // the marker's record, set before finished is closed
	finalSeq int64         // the number of lines, likewise
	finished chan struct{} // closed when the script exited

	held     int64     // the server's contiguous end, as last heard
	movedAt  time.Time // when held last moved
	pushedTo int64     // highest seq pushed
	answered bool      // the server answered once
}

func newPusher(srv podServer, sp *spool, drain time.Duration) *pusher {
	if drain <= 0 {
		drain = DefaultDrainTimeout
	}
	return &pusher{srv: srv, spool: sp, check: pushCheck, stall: pushStall, drain: drain, finished: make(chan struct{})}
}

// finish hands the pusher the marker's record (without its newline) and the number of lines: it drains now.
func (p *pusher) finish(eos string, lines int64) {
	p.eos, p.finalSeq = eos, lines
	close(p.finished)
}

// errStop ends pushing: the server will take nothing more from this pod (its operation ended, its lease
// expired, or it refuses what the pod sends).
var errStop = errors.New("the server takes nothing more from this pod")

// run pushes until ctx ends, or after finish until the server holds everything (the marker included) or the
// drain timed out. It never holds up the script: the runner calls it beside it.
func (p *pusher) run(ctx context.Context) {
	_, _ = p.call(ctx, nil) // at once: a server that never answers is not waited for at the end
	p.movedAt = time.Now()
	tick := time.NewTicker(p.check)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.finished:
			p.drainAll(ctx)
			return
		case <-tick.C:
		}
		if newest, _ := p.spool.state(); newest <= max(p.held, p.pushedTo) {
			p.movedAt = time.Now() // nothing the server may lack, so nothing it is late with: no call
			continue
		}
		if err := p.step(ctx, 0); errors.Is(err, errStop) {
			<-p.finished // keep nothing more; the runner still waits for this goroutine
			return
		}
	}
}

// drainAll runs after the script exited, for at most p.drain.
func (p *pusher) drainAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.drain)
	defer cancel()
	tick := time.NewTicker(drainCheck)
	defer tick.Stop()
	for {
		err := p.step(ctx, p.finalSeq)
		if err == nil && p.held >= p.finalSeq {
			_, err = p.call(ctx, []string{p.eos})
			if err == nil {
				return // the server holds every line and the marker
			}
		}
		if errors.Is(err, errStop) || (err != nil && !p.answered) {
			return // stopped, or the server never answered this pod: the channel does not work here
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// step asks how far the server holds the log, forgets what it holds and, when the server is stuck or far
// behind, pushes the rest (up to upTo, when not 0; everything spooled otherwise).
func (p *pusher) step(ctx context.Context, upTo int64) error {
	if _, err := p.call(ctx, nil); err != nil {
		return err
	}
	_, size := p.spool.state()
	if time.Since(p.movedAt) < p.stall && size < pushLag {
		return nil
	}
	for {
		recs, err := p.spool.records(max(p.held, p.pushedTo), api.MaxLogLines, api.MaxPodPushBytes)
		if err != nil || len(recs) == 0 {
			return err
		}
		if _, err := p.call(ctx, recs); err != nil {
			return err
		}
		if upTo > 0 && p.pushedTo >= upTo {
			return nil
		}
	}
}

// call asks the server (no records) or pushes records, and notes what it answered.
func (p *pusher) call(ctx context.Context, recs []string) (api.PodLogState, error) {
	var st api.PodLogState
	var err error
	if recs == nil {
		st, err = p.srv.LogState(ctx)
	} else {
		st, err = p.srv.PushLogs(ctx, recs)
	}
	if err != nil {
		if e, ok := api.AsStatusError(err); ok && e.Status != http.StatusTooManyRequests && e.Status < 500 {
			return st, errStop
		}
		return st, err
	}
	p.answered = true
	if recs != nil {
		if last := recordSeq(recs[len(recs)-1]); last > p.pushedTo {
			p.pushedTo = last
		}
	}
	if st.LastSeq > p.held {
		p.held, p.movedAt = st.LastSeq, time.Now()
		p.spool.trim(st.LastSeq)
	}
	return st, nil
}

// openChannel makes the runner keep its records in a spool under dir and deliver what the server lacks
// through the pod token.
func (r *Runner) openChannel(spec Spec, token, dir string) error {
	srv, err := client.NewPod(spec.DispatchURL, token, client.Config{RetryMax: 2, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	sp, err := newSpool(dir, spec.SpoolBytes)
	if err != nil {
		return err
	}
	r.push = newPusher(srv, sp, time.Duration(spec.DrainSeconds)*time.Second)
	return nil
}
