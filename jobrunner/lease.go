package jobrunner

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// leaseSlots is what the lease loop needs of the operations the agent supervises (the Agent is one).
type leaseSlots interface {
	// arm returns, when a slot is free and the agent is not draining, a context for one long-poll, which a
	// drain that starts meanwhile cancels; otherwise a channel closed when either may have changed.
	arm(ctx context.Context) (context.Context, context.CancelFunc, <-chan struct{})
	// disarm ends what arm began, once the long-poll returned.
	disarm()
	// start supervises a leased operation.
	start(ctx context.Context, lease api.Lease, adopt bool)
}

// leaser long-polls for operations while the agent has a free slot and is not draining.
type leaser struct {
	d     Dispatcher
	slots leaseSlots
	log   *logrus.Entry
}

// Start leases operations until ctx ends.
func (l *leaser) Start(ctx context.Context) error {
	backoff := time.Second
	for {
		pollCtx, cancelPoll, wait := l.slots.arm(ctx)
		if wait != nil {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		lease, err := l.d.Lease(pollCtx, api.MaxLeaseWait)
		l.slots.disarm()
		drained := pollCtx.Err() != nil
		cancelPoll()
		if ctx.Err() != nil {
			return nil
		}
		if drained && lease == nil {
			continue
		}
		if err != nil {
			l.log.WithError(err).WithField("retry_in", backoff).Warn("leasing failed")
			if !backOff(ctx, &backoff, 30*time.Second) {
				return nil
			}
			continue
		}
		backoff = time.Second
		if lease != nil {
			l.log.WithFields(logrus.Fields{"operation": lease.Operation.ID, "lease": lease.LeaseID}).Info("leased operation")
			l.slots.start(ctx, *lease, false)
		}
	}
}
