package jobrunner

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// heartbeatOps is what the heartbeat needs of the operations the agent supervises (the Agent is one).
type heartbeatOps interface {
	// status returns the ids of the operations supervised now, sorted, and whether the agent is draining.
	status() (running []string, draining bool)
	// drain records whether the server asks to drain and whether a self-update is under way; the agent takes
	// no new operations while either holds.
	drain(asked, updating bool)
	// cancel asks those of ids that are supervised here to cancel.
	cancel(ids []string)
}

// heartbeater reports health and running operations, and acts on cancel, drain and version requests.
// The interval is worker.heartbeatInterval, or the server's heartbeat_seconds when that is shorter (cancel
// requests travel in heartbeat replies).
type heartbeater struct {
	cfg     Config
	kube    kubernetes.Interface // reads why helm refused the worker's last upgrade
	d       Dispatcher
	ops     heartbeatOps
	updates *selfUpdates
	checks  *checker // the last round of health checks
	beats   *beats   // the loop's progress, for the probes
	log     *logrus.Entry
}

// Start heartbeats until ctx ends.
func (h *heartbeater) Start(ctx context.Context) error {
	interval := h.cfg.HeartbeatInterval
	h.beats.begin(time.Now())
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s, again := h.beat(ctx)
		if s > 0 && s < h.cfg.HeartbeatInterval && s != interval {
			interval = s
			t.Reset(interval)
		}
		if again && ctx.Err() == nil {
			continue
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
	}
}

// beat sends one heartbeat and acts on the reply; it returns the server's preferred interval (0: none) and
// whether to send the next one at once (a drain for a self-update began: the server hears of it before the
// upgrade starts).
func (h *heartbeater) beat(ctx context.Context) (time.Duration, bool) {
	h.beats.begin(time.Now())
	refused := refusedUpgrade(ctx, h.kube, h.cfg.Namespace, h.cfg.Release)
	checks, at := h.checks.last()
	running, draining := h.ops.status()
	req := api.HeartbeatRequest{
		Version: h.cfg.Version, Capacity: h.cfg.Concurrency, Capabilities: h.cfg.Capabilities,
		Profiles: h.cfg.ProfileNames(), AllowOverrides: h.cfg.AllowOverrides, Running: running, Health: healthOf(checks, at, h.updates.Note(), refused), Draining: draining,
	}
	resp, err := h.d.Heartbeat(ctx, req)
	h.beats.end(time.Now(), err)
	if err != nil {
		if ctx.Err() == nil {
			h.log.WithError(err).Warn("heartbeat failed")
		}
		return 0, false
	}
	h.ops.drain(resp.Drain, h.updates.Waiting())
	h.ops.cancel(resp.Cancel)
	again := false
	if resp.DesiredVersion != "" && resp.DesiredVersion != h.cfg.Version {
		again = h.updates.want(ctx, resp)
	} else {
		h.updates.versionsAgree()
	}
	h.ops.drain(resp.Drain, h.updates.Waiting())
	return time.Duration(resp.HeartbeatSeconds) * time.Second, again
}

// capMessage returns s as valid UTF-8 of at most n bytes, cut at a character boundary and marked when cut.
func capMessage(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const mark = " [...]"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
