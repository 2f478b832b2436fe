package jobrunner

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// updateRetryDelay is how long the agent works on after a failed self-update before it tries the same chart
// again (asking the Updater's Preflight first, when it has one, so that a refused chart costs no drain).
const updateRetryDelay = time.Minute

// updateRecheck is how often a worker whose self-update has started, and which is still running, hands the
// same chart to the Updater again: normally the upgrade replaces this worker long before; if the upgrade Job
// vanished, this starts it again, and if it failed without replacing this worker, the Updater says so.
const updateRecheck = time.Minute

// preflighter is an Updater that can tell, before the agent drains, that it would refuse an update (the same
// chart failed before); chartgen/selfupdate.Updater is one.
type preflighter interface {
	Preflight(ctx context.Context, version, chartSHA256 string) error
}

// selfUpdates is the self-update state: whether a self-update is under way (the agent drains while it is),
// which chart failed last and when it may be tried again, and what the worker says about it (a note in its
// health message, which healthOf puts together; it never makes the worker unhealthy). Only the heartbeat
// changes it; its lock is never held across a call out (Preflight, the chart download, Update, running).
type selfUpdates struct {
	updater    Updater // nil: self-update disabled
	fetchChart func(ctx context.Context, url, sha256 string) ([]byte, error)
	version    string     // this worker's version
	running    func() int // how many operations the agent supervises now (log lines and the health message)
	log        *logrus.Entry

	mu       sync.Mutex
	waiting  bool      // a self-update is under way (key): no new leases until it ends
	key      string    // "version@sha256" of the chart being installed
	updating bool      // the Updater is being called
	started  time.Time // when the Updater last accepted key (zero: not yet)
	failed   string    // "version@sha256" of the desired chart whose self-update failed last
	retryAt  time.Time // when a failed self-update of that chart may be tried again
	note     string    // the self-update's state, for the health message ("": nothing to say)
}

// Note is what the version checks have to say in the health message ("": nothing).
func (u *selfUpdates) Note() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.note
}

// Waiting reports whether a self-update is under way (the agent takes no new operations).
func (u *selfUpdates) Waiting() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.waiting
}

// versionsAgree ends a self-update under way, and clears the note: it is stale once the versions agree.
func (u *selfUpdates) versionsAgree() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.waiting {
		u.log.Info("the server no longer asks for another version: taking operations again")
		u.waiting, u.key, u.started = false, "", time.Time{}
	}
	u.note, u.failed = "", ""
}

// want acts on a heartbeat reply that names another version than this worker's: it drains and, at once, hands
// the new chart to the Updater: the heartbeat that brings a new desired version starts the drain (and asks for
// another heartbeat at once, which tells the server), the next one starts the upgrade. Running operations are
// not waited for: their Jobs keep running, this worker keeps following them and shipping their logs until the
// upgrade replaces its pod (Run returns on SIGTERM without reporting them), and the new worker, which has the
// same identity, re-adopts them from the server's leases and reports their results. A failed upgrade brings
// this version back, which re-adopts them the same way. It returns true when it began draining; the caller
// reads Waiting to drain or stop draining.
func (u *selfUpdates) want(ctx context.Context, resp api.HeartbeatResponse) bool {
	if u.updater == nil || resp.ChartURL == "" {
		msg := fmt.Sprintf("dispatch server wants version %s; this worker runs %s and self-update is disabled", resp.DesiredVersion, u.version)
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.note != msg {
			u.log.Warn(msg)
		}
		u.note = msg
		return false
	}
	key := resp.DesiredVersion + "@" + resp.ChartSHA256
	u.mu.Lock()
	if key == u.failed && time.Now().Before(u.retryAt) {
		u.mu.Unlock()
		return false // keep working on this version; the health message says why the update failed
	}
	if u.updating {
		u.mu.Unlock()
		return false
	}
	p, canPreflight := u.updater.(preflighter)
	if !u.waiting || u.key != key {
		u.mu.Unlock()
		if canPreflight {
			if err := p.Preflight(ctx, resp.DesiredVersion, resp.ChartSHA256); err != nil {
				u.mu.Lock()
				u.failedLocked(key, resp.DesiredVersion, err)
				u.mu.Unlock()
				return false
			}
		}
		running := u.running()
		u.mu.Lock()
		defer u.mu.Unlock()
		u.log.WithFields(logrus.Fields{"version": resp.DesiredVersion, "running": running}).Info("draining for self-update; running Jobs keep running")
		u.waiting, u.key, u.started = true, key, time.Time{}
		u.note = "draining for a self-update to " + resp.DesiredVersion
		return true
	}
	if !u.started.IsZero() && time.Since(u.started) < updateRecheck {
		u.mu.Unlock()
		// The upgrade runs. Should it fail without replacing this worker (e.g. the values pin the image), the
		// Updater's Preflight says so and this worker takes operations again.
		if canPreflight {
			if err := p.Preflight(ctx, resp.DesiredVersion, resp.ChartSHA256); err != nil {
				u.mu.Lock()
				if u.key == key {
					u.failedLocked(key, resp.DesiredVersion, err)
				}
				u.mu.Unlock()
			}
		}
		return false
	}
	u.updating = true
	u.mu.Unlock()
	err := u.update(ctx, resp)
	running := u.running()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.updating = false
	if err != nil {
		u.failedLocked(key, resp.DesiredVersion, err)
		return false
	}
	if u.started.IsZero() {
		u.log.WithFields(logrus.Fields{"version": resp.DesiredVersion, "running": running}).Info("self-update started; the new worker re-adopts the running Jobs")
		u.note = fmt.Sprintf("self-update to %s started: the new worker replaces this one and re-adopts its %d running operations", resp.DesiredVersion, running)
	}
	u.started = time.Now()
	return false
}

// failedLocked records a failed self-update: this version keeps running and takes operations again, the
// note says why, and the same chart is tried again after updateRetryDelay.
func (u *selfUpdates) failedLocked(key, version string, err error) {
	msg := "self-update to " + version + " failed: " + err.Error()
	if u.note != msg {
		u.log.WithError(err).WithField("retry_in", updateRetryDelay).Error("self-update failed; taking operations again")
	}
	u.note = msg
	u.failed, u.retryAt = key, time.Now().Add(updateRetryDelay)
	u.waiting, u.key, u.started = false, "", time.Time{}
}

func (u *selfUpdates) update(ctx context.Context, resp api.HeartbeatResponse) error {
	chart, err := u.fetchChart(ctx, resp.ChartURL, resp.ChartSHA256)
	if err != nil {
		return fmt.Errorf("downloading chart %s: %w", resp.ChartURL, err)
	}
	return u.updater.Update(ctx, resp.DesiredVersion, chart)
}
