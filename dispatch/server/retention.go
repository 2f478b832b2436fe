package server

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/pkgfiles"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

const (
	// RetentionEvery is how often a Retention runs after its first run, at start.
	RetentionEvery = time.Hour
	// retentionBatch bounds the operations one write of a run deletes, so other writes wait little behind it.
	retentionBatch = 500
)

// Retention deletes the history that ended more than Keep ago (operations with their logs, deployments with
// their steps: see store.Retention for the rule), once at start and then every RetentionEvery.
type Retention struct {
	st    store.Retention
	keep  time.Duration
	log   *logrus.Entry
	files *pkgfiles.Dir
	pkgs  store.Packages
}

// WithPackages makes the retention delete packages too: those created more than Keep ago that no operation
// references (rows and files), content no package names that was not pushed within Keep, and uploads not
// continued for uploadTTL (or Keep when shorter).
func (r *Retention) WithPackages(pkgs store.Packages, files *pkgfiles.Dir) *Retention {
	r.pkgs, r.files = pkgs, files
	return r
}

// uploadTTL is how long an unfinished package upload waits to be continued.
const uploadTTL = 24 * time.Hour

// NewRetention returns a Retention keeping what ended in the last keep (which must be positive: a server that
// keeps everything runs none).
func NewRetention(st store.Retention, keep time.Duration, log *logrus.Logger) *Retention {
	return &Retention{st: st, keep: keep, log: log.WithField("component", "retention")}
}

// Start runs the retention at once, then every RetentionEvery, until ctx ends; it returns nil then. A run
// that fails is logged and the next one tries again.
func (r *Retention) Start(ctx context.Context) error {
	t := time.NewTicker(RetentionEvery)
	defer t.Stop()
	for {
		r.run(ctx, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// run runs the retention now, unless another server runs it at this moment (ran is false then).
func (r *Retention) run(ctx context.Context, now time.Time) (ran bool) {
	ran, err := exclusively(ctx, r.st, sweepRetention, func(ctx context.Context) error {
		r.runNow(ctx, now)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.log.WithError(err).Error("taking the retention's lock (the next run tries again)")
	}
	if !ran && err == nil {
		r.log.Debug("another server runs the retention now: skipped")
	}
	return ran
}

// runNow is one run of the retention.
func (r *Retention) runNow(ctx context.Context, now time.Time) {
	before := now.Add(-r.keep)
	log := r.log.WithField("ended_before", before.UTC().Format(time.RFC3339))
	start := time.Now()
	n, err := r.st.DeleteFinished(ctx, before, retentionBatch)
	log = log.WithField("operations", n).WithField("took", time.Since(start).Round(time.Millisecond).String())
	switch {
	case err != nil && ctx.Err() == nil:
		log.WithError(err).Error("deleting old history (the next run tries again)")
	case err == nil:
		log.Info("deleted the operations and deployments that ended before the retention")
	}
	if r.files != nil {
		r.packages(ctx, before, now.Add(-min(r.keep, uploadTTL)))
	}
}

// packages deletes the packages no operation references that were created before before, then the files no
// package names (content last pushed before before, uploads last continued before uploadsBefore).
func (r *Retention) packages(ctx context.Context, before, uploadsBefore time.Time) {
	unused, err := r.st.DeletePackages(ctx, before)
	if err != nil {
		r.log.WithError(err).Error("deleting unused packages (the next run tries again)")
		return
	}
	for _, sha := range unused {
		if _, err := r.files.RemoveUnused(sha, before); err != nil {
			r.log.WithError(err).Error("deleting package content (the next run tries again)")
		}
	}
	list, err := r.pkgs.ListPackages(ctx)
	if err != nil {
		r.log.WithError(err).Error("listing packages (the next run tries again)")
		return
	}
	named := map[string]bool{}
	for _, p := range list {
		named[p.SHA256] = true
	}
	n, err := r.files.Sweep(before, uploadsBefore, func(sha string) bool { return named[sha] })
	if err != nil {
		r.log.WithError(err).Error("deleting unused package files (the next run tries again)")
	}
	r.log.WithField("packages", len(unused)).WithField("files", n+len(unused)).Info("deleted the packages no operation references that were created before the retention")
}
