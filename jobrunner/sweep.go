package jobrunner

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/labels"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// sweepOps is what the sweeper needs of the operations the agent supervises (the Agent is one).
type sweepOps interface {
	// takeUp supervises the leases that nothing here supervises, and returns them.
	takeUp(ctx context.Context, leases []api.Lease) []api.Lease
	// supervised returns the ids of the operations supervised now.
	supervised() []string
}

// sweeper, every interval, takes up the leases the server holds for this worker that nobody here supervises,
// and deletes Jobs and Secrets of operations that are neither supervised here nor leased to this worker by the
// server: leftovers of a crash between creating a Secret and its Job, or of leases that expired.
type sweeper struct {
	interval time.Duration
	d        Dispatcher
	ops      sweepOps
	objects  kubeObjects
	jobs     batchlisters.JobLister
	secrets  corelisters.SecretLister
	log      *logrus.Entry
}

// Start sweeps until ctx ends.
func (s *sweeper) Start(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
		if err := s.once(ctx); err != nil && ctx.Err() == nil {
			s.log.WithError(err).Warn("sweeping orphaned Jobs and Secrets")
		}
	}
}

func (s *sweeper) once(ctx context.Context) error {
	leases, err := s.d.Leases(ctx)
	if err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	// Leases the server holds for this worker that nobody here supervises (a lease reply lost on the way, a
	// long-poll cancelled as it was granted): take them up, or they would expire as lost.
	for _, l := range s.ops.takeUp(ctx, leases) {
		s.log.WithField("operation", l.Operation.ID).Warn("taking up a lease this worker holds but did not supervise")
	}
	return s.sweep(ctx, leases)
}

// sweep deletes the Jobs and Secrets of operations neither in leases nor supervised here. Finished Jobs are
// left to ttlSecondsAfterFinished; objects younger than one sweep interval are left alone (their lease may be
// in flight).
func (s *sweeper) sweep(ctx context.Context, leases []api.Lease) error {
	keep := map[string]bool{}
	for _, l := range leases {
		keep[l.Operation.ID] = true
	}
	for _, id := range s.ops.supervised() {
		keep[id] = true
	}
	young := time.Now().Add(-s.interval)
	jobs, err := s.jobs.Jobs(s.objects.ns).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing Jobs: %w", err)
	}
	for _, j := range jobs {
		id := j.Annotations[AnnotationOperation]
		if keep[id] || j.DeletionTimestamp != nil || j.CreationTimestamp.Time.After(young) ||
			jobCondition(j, batchv1.JobComplete, batchv1.JobFailed) != nil {
			continue
		}
		s.log.WithFields(logrus.Fields{"operation": id, "job": j.Name}).Warn("deleting Job of an operation no longer leased to this worker")
		if _, err := s.objects.deleteJob(ctx, j.Name); err != nil {
			return fmt.Errorf("deleting Job %s: %w", j.Name, err)
		}
	}
	secrets, err := s.secrets.Secrets(s.objects.ns).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing Secrets: %w", err)
	}
	for _, sec := range secrets {
		id := sec.Annotations[AnnotationOperation]
		if keep[id] || len(sec.OwnerReferences) > 0 || sec.DeletionTimestamp != nil || sec.CreationTimestamp.Time.After(young) {
			continue
		}
		s.log.WithFields(logrus.Fields{"operation": id, "secret": sec.Name}).Warn("deleting Secret of an operation no longer leased to this worker")
		if _, err := s.objects.deleteSecret(ctx, sec.Name); err != nil {
			return fmt.Errorf("deleting Secret %s: %w", sec.Name, err)
		}
	}
	return nil
}
