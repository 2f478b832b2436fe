package server

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

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
	st   store.Retention
	keep time.Duration
	log  *logrus.Entry
}

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

func (r *Retention) run(ctx context.Context, now time.Time) {
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
}
