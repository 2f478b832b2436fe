package jobrunner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
	"github.com/octo-worker/octo-worker/jobrunner/podrunner"
)

// shutdownFlush bounds how long a stopping agent (SIGTERM: its pod is being replaced, e.g. by a self-update)
// keeps trying to deliver the lines it has read but the server has not acknowledged. Lines it cannot deliver
// in time are not lost: the next worker reads them again from the pod log, after the server's last_seq. The
// chart's terminationGracePeriodSeconds (30) leaves room for it.
const shutdownFlush = 10 * time.Second

// cancelDeliver bounds how long a cancel waits for its "cancel requested" line to reach the server before it
// deletes the Job: a worker that dies right after the deletion must not leave a log that does not say why the
// script stopped (the restarted worker finds no Job and reports the operation cancelled from its lease).
const cancelDeliver = 10 * time.Second

// operation supervises one leased operation: it creates (or adopts) its Secret and Job, follows its pod's
// log into the shipper, watches Job and pod state through the agent's informer, and reports the result.
// Its state is touched only by its own run goroutine, except cancel and kick, which are channels.
type operation struct {
	deps  operationDeps
	lease api.Lease
	id    string
	name  string // Job and Secret name
	adopt bool
	log   *logrus.Entry

	kick     chan struct{} // informer saw a change of its Job or pod (buffer 1)
	evCh     chan *corev1.Event
	cancelCh chan struct{}
	cancel   sync.Once

	ship   *shipper
	sealer *logline.Sealer
	pushes bool // the pod can push to the server what its log lost (its Secret has a pod token)

	// follow state: one follower per pod (a Job with retries has several); numbering continues across them.
	fol        *follower
	folPod     string
	folDone    chan error
	folRunning bool
	base       int64 // lines delivered by earlier pods

	cancelling bool
	adopted    bool   // supervision began without creating the Job (the judge's observation.Adopted)
	memory     memory // the judge's, between two looks
	events     map[types.UID]int32
	startedAt  time.Time // events from before this are not written (they were, or are stale)
	jobCreated time.Time // when this agent created the Job (zero: it adopted one), for the pod start metric
	finished   bool
}

// operationDeps are what an operation needs from the agent that starts it.
type operationDeps struct {
	namespace    string
	version      string   // the worker's, written in the operation's log
	workerID     string   // labels the operation's objects
	capabilities []string // what this worker can run
	limits       limits
	build        objectBuilder
	objects      kubeObjects // every write (and direct read) of the operation's Job and Secret
	jobs         batchlisters.JobLister
	pods         corelisters.PodLister
	logs         podLogs
	d            operationDispatcher
	log          *logrus.Entry // the operation adds its own fields
	metrics      *Metrics      // nil: none kept
}

// objectBuilder builds an operation's Secret and Job; *Config is one.
type objectBuilder interface {
	RequestsFor(op *api.Operation) (corev1.ResourceList, []string, error)
	BuildSecret(workerID string, lease *api.Lease, key []byte) (*corev1.Secret, error)
	BuildJob(workerID string, lease *api.Lease, requests corev1.ResourceList) *batchv1.Job
}

// operationDispatcher is the part of the Dispatcher an operation uses: its shipper appends its log lines,
// and it reports the running state and the result.
type operationDispatcher interface {
	logAppender
	SetRunning(ctx context.Context, operationID, leaseID, message string) (api.Operation, error)
	Result(ctx context.Context, operationID string, req api.ResultRequest) (api.Operation, error)
}

func newOperation(deps operationDeps, lease api.Lease, adopt bool) *operation {
	o := &operation{
		deps: deps, lease: lease, id: lease.Operation.ID, name: JobName(lease.Operation.ID), adopt: adopt,
		log:       deps.log.WithFields(logrus.Fields{"operation": lease.Operation.ID, "job": JobName(lease.Operation.ID)}),
		kick:      make(chan struct{}, 1),
		evCh:      make(chan *corev1.Event, 64),
		cancelCh:  make(chan struct{}),
		events:    map[types.UID]int32{},
		startedAt: time.Now().Add(-time.Second),
	}
	// Here, not in run: the agent's metrics read its backlog.
	o.ship = newShipper(deps.d, o.id, lease.LeaseID, lease.LastSeq, o.log)
	o.ship.metrics = deps.metrics
	return o
}

func (o *operation) notify() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *operation) requestCancel() { o.cancel.Do(func() { close(o.cancelCh) }) }

// say writes a system line into the operation's log.
func (o *operation) say(ctx context.Context, format string, args ...any) {
	if err := o.ship.Add(ctx, systemLine(fmt.Sprintf(format, args...))); err != nil && ctx.Err() == nil {
		o.log.WithError(err).Warn("could not queue a system line")
	}
}

func (o *operation) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	// The shipper outlives ctx by up to shutdownFlush, so that a stopping agent delivers what it has read.
	shipCtx, stopShip := context.WithCancel(context.WithoutCancel(ctx))
	defer stopShip()
	wg.Add(1)
	go func() { defer wg.Done(); o.ship.Run(shipCtx) }()

	if msg := refusal(o.deps.capabilities, &o.lease.Operation); msg != "" {
		o.finish(ctx, &outcome{State: api.StateFailed, Message: msg})
		return
	}
	if err := o.ensureObjects(ctx); err != nil {
		if ctx.Err() != nil {
			o.detach(ctx)
			return
		}
		out := &outcome{State: api.StateFailed, Message: err.Error()}
		if errors.Is(err, errCancelledKeyGone) {
			out = &outcome{State: api.StateCancelled, Message: "cancelled"}
		}
		o.finish(ctx, out)
		return
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	shipFailed := o.ship.failed
	for {
		select {
		case <-ctx.Done():
		case <-o.kick:
		case ev := <-o.evCh:
			o.onEvent(ctx, ev)
		case <-timer.C:
		case <-o.cancelCh:
			if ctx.Err() != nil {
				break // stopping: the next worker learns of the cancel request from its heartbeat
			}
			o.cancelCh = nil // handled once
			if o.cancelling {
				break // re-adopted while its Job was being deleted for this cancel: said and done before
			}
			o.cancelling = true
			o.say(ctx, "cancel requested: deleting Job %s/%s and its pod", o.deps.namespace, o.name)
			dctx, cancel := context.WithTimeout(ctx, cancelDeliver)
			if err := o.ship.Deliver(dctx); err != nil {
				o.log.WithError(err).Warn("the \"cancel requested\" line did not reach the dispatch server; deleting the Job all the same")
			}
			cancel()
			o.deleteJob(ctx)
		case <-shipFailed:
			if err := o.ship.Err(); leaseGone(err) {
				o.log.WithError(err).Warn("the dispatch server no longer leases this operation to this worker: stopping its Job and forgetting it")
				o.deleteJob(ctx)
				if o.folRunning {
					stop()
					<-o.folDone
				}
				return
			}
			shipFailed = nil // other refusals: the result reports what happened
		case err := <-o.folDone:
			o.folRunning = false
			if errors.Is(err, errGap) && ctx.Err() == nil {
				o.startFollower(ctx, o.folPod, true)
			} else if err != nil && ctx.Err() == nil {
				o.log.WithError(err).Warn("following pod log")
			}
		}
		if ctx.Err() != nil {
			o.detach(ctx)
			return
		}
		out, next := o.evaluate(ctx)
		if out != nil {
			if o.folRunning {
				// Take every line the pod still serves before reporting.
				if err := <-o.folDone; errors.Is(err, errGap) {
					o.fol.gapRead()
				}
				o.folRunning = false
			}
			o.finish(ctx, out)
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// detach ends the supervision of a running operation when the agent stops (SIGTERM; its pod is replaced by
// a self-update or a rollout): the follower stops, the lines read so far are delivered (within
// shutdownFlush), and nothing else happens. No result is reported and the Job and Secret stay, so the next
// worker with this identity re-adopts the operation from the server's lease and resumes after its last_seq.
func (o *operation) detach(ctx context.Context) {
	if o.folRunning {
		<-o.folDone
		o.folRunning = false
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlush)
	defer cancel()
	stored, err := o.ship.Flush(fctx)
	switch {
	case err != nil:
		o.log.WithError(err).Warn("worker stopping: not every line read was delivered; the next worker reads them again from the pod log")
	case o.fol != nil:
		o.log.WithFields(logrus.Fields{"server_holds": stored, "read": o.fol.delivered}).Info("worker stopping: lines delivered; the Job keeps running for the next worker to re-adopt")
	default:
		o.log.Info("worker stopping: the Job keeps running for the next worker to re-adopt")
	}
}

// errCancelledKeyGone: a re-adopted operation whose cancel was requested has its Job still being deleted and
// its Secret gone already (garbage collection deletes it before the Job's pods are gone): the operation is
// cancelled, and what its pod still prints cannot be unsealed.
var errCancelledKeyGone = errors.New("cancelled; the Job is being deleted and its Secret is gone")

// ensureObjects creates the operation's Secret and Job, or adopts existing ones.
func (o *operation) ensureObjects(ctx context.Context) error {
	ns := o.deps.namespace
	if job, err := o.deps.jobs.Jobs(ns).Get(o.name); err == nil && job.Annotations[AnnotationOperation] == o.id {
		var sec *corev1.Secret
		err := o.untilReachable(ctx, "read Secret "+o.name, func() (err error) {
			sec, err = o.deps.objects.getSecret(ctx, o.name)
			return err
		})
		if err != nil {
			o.deleteJob(ctx)
			if o.lease.Operation.CancelRequested && job.DeletionTimestamp != nil {
				return errCancelledKeyGone
			}
			return fmt.Errorf("adopting Job %s: reading its Secret: %w (the Job was deleted; its output cannot be read)", o.name, err)
		}
		if o.sealer, err = logline.NewSealer(sec.Data[podrunner.SealingKeyKey], o.id); err != nil {
			return fmt.Errorf("adopting Job %s: %w", o.name, err)
		}
		o.pushes = len(sec.Data[podrunner.PodTokenKey]) > 0
		// A Job being deleted after a cancel was requested: the worker before this one deleted it for the cancel.
		o.cancelling = o.lease.Operation.CancelRequested && job.DeletionTimestamp != nil
		o.log.WithField("last_seq", o.lease.LastSeq).Info("re-adopted running Job")
		o.say(ctx, "worker restarted (octo-worker %s): following Job %s/%s again from line %d", o.deps.version, ns, o.name, o.lease.LastSeq+1)
		if o.lease.Operation.State != api.StateRunning {
			if _, err := o.deps.d.SetRunning(ctx, o.id, o.lease.LeaseID, "Job "+ns+"/"+o.name); err != nil {
				o.log.WithError(err).Warn("reporting running state")
			}
		}
		return nil
	}
	if (o.adopt && o.lease.Operation.State == api.StateRunning) || o.lease.Operation.CancelRequested {
		// The Job was created before and is gone, or a cancel makes it needless: the judge decides what its
		// absence means, once the API server confirms it.
		o.adopted = true
		return nil
	}

	requests, notes, err := o.deps.build.RequestsFor(&o.lease.Operation)
	if err != nil {
		return err
	}
	key, err := sealingKey(&o.lease)
	if err != nil {
		return err
	}
	if o.sealer, err = logline.NewSealer(key, o.id); err != nil {
		return err
	}
	secret, err := o.deps.build.BuildSecret(o.deps.workerID, &o.lease, key)
	if err != nil {
		return err
	}
	job := o.deps.build.BuildJob(o.deps.workerID, &o.lease, requests)

	objs := o.deps.objects
	o.pushes = len(secret.Data[podrunner.PodTokenKey]) > 0
	var sec *corev1.Secret
	var existed bool
	if err := o.untilReachable(ctx, "create Secret "+o.name, func() (err error) {
		sec, existed, err = objs.createSecret(ctx, secret)
		return err
	}); err != nil {
		return err
	} else if existed {
		// A previous attempt of this agent got this far: reuse its key.
		if o.sealer, err = logline.NewSealer(sec.Data[podrunner.SealingKeyKey], o.id); err != nil {
			return fmt.Errorf("existing Secret %s: %w", o.name, err)
		}
	}
	var created *batchv1.Job
	if err := o.untilReachable(ctx, "create Job "+o.name, func() (err error) {
		created, err = objs.createJob(ctx, job)
		return err
	}); err != nil {
		return err
	}
	o.jobCreated = time.Now()
	if err := objs.ownSecret(ctx, created); err != nil {
		// Not fatal: the sweeper removes the Secret once the operation is no longer leased.
		o.log.WithError(err).Warn("setting the Job as owner of the operation's Secret")
	}

	image := job.Spec.Template.Spec.Containers[0].Image // the step's, else the tools image
	o.say(ctx, "running in Job %s/%s, image %s, requests %s (octo-worker %s)", ns, o.name, image, formatResources(requests), o.deps.version)
	for _, n := range notes {
		o.say(ctx, "%s", n)
	}
	if _, err := o.deps.d.SetRunning(ctx, o.id, o.lease.LeaseID, "Job "+ns+"/"+o.name); err != nil {
		o.log.WithError(err).Warn("reporting running state")
	}
	o.log.WithField("image", image).Info("created Job")
	return nil
}

func formatResources(rl corev1.ResourceList) string {
	var parts []string
	for _, n := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := rl[n]; ok {
			parts = append(parts, string(n)+"="+q.String())
		}
	}
	return strings.Join(parts, ", ")
}

// evaluate judges the operation from the Job and pods the informer holds, and performs what the verdict asks
// on the way: follow a pod, write lines, ask the API server whether the Job exists. It returns the outcome
// (nil: not ended) and when to look again without a change.
func (o *operation) evaluate(ctx context.Context) (*outcome, time.Duration) {
	now := time.Now()
	obs := o.observe()
	v := judge(obs, now, o.deps.limits)
	o.perform(ctx, v)
	if v.CheckJob {
		if o.deps.objects.jobGone(ctx, o.name) {
			obs.JobGone = true
			obs.Following, obs.FollowedPod = o.folRunning, o.folPod
			v = judge(obs, now, o.deps.limits)
			o.perform(ctx, v)
		}
	}
	return v.Outcome, v.Next
}

// observe gathers what the judge looks at.
func (o *operation) observe() observation {
	ns := o.deps.namespace
	job, err := o.deps.jobs.Jobs(ns).Get(o.name)
	if err != nil || job.Annotations[AnnotationOperation] != o.id {
		job = nil
	}
	obs := observation{
		Job: ns + "/" + o.name, JobObject: job, Pods: o.pods(), StartedAt: o.startedAt,
		Adopted: o.adopted, CancelRequested: o.lease.Operation.CancelRequested || o.cancelling,
		Cancelling: o.cancelling, Following: o.folRunning, FollowedPod: o.folPod, Memory: o.memory,
	}
	if o.fol != nil {
		obs.EOS = o.fol.marker()
	}
	return obs
}

// perform carries out a verdict's effects, except its outcome (run finishes the operation with it).
func (o *operation) perform(ctx context.Context, v verdict) {
	o.measure(v, time.Now())
	o.memory = v.Memory
	if v.Follow != "" {
		if o.fol != nil {
			o.base = o.fol.delivered
		}
		o.startFollower(ctx, v.Follow, false)
	}
	for _, line := range v.Say {
		o.say(ctx, "%s", line)
	}
}

func (o *operation) startFollower(ctx context.Context, pod string, fromStart bool) {
	if o.fol == nil || o.folPod != pod {
		o.fol = &follower{logs: o.deps.logs, pod: pod, sealer: o.sealer, offset: o.base, delivered: max(o.base, o.lease.LastSeq)}
		if o.pushes {
			o.fol.ask = o.askServer(ctx)
		}
		o.folPod = pod
	}
	o.folDone = make(chan error, 1)
	o.folRunning = true
	f := o.fol
	go func() { o.folDone <- o.followLoop(ctx, f, fromStart) }()
}

// followLoop follows one pod's log until the marker, the end of a terminated container's log, or ctx. It
// returns errGap when the caller should re-read from the start.
func (o *operation) followLoop(ctx context.Context, f *follower, fromStart bool) error {
	emit := func(l api.LogLine) error { return o.ship.Add(ctx, l) }
	finalRead := false
	backoff := 250 * time.Millisecond
	for {
		err := f.stream(ctx, true, fromStart, emit)
		if f.marker() != nil || ctx.Err() != nil || errors.Is(err, errGap) {
			return err
		}
		fromStart = false
		pod, perr := o.deps.pods.Pods(o.deps.namespace).Get(f.pod)
		gone := perr != nil
		st := (*corev1.ContainerStatus)(nil)
		if !gone {
			st = containerStatus(pod.Status.ContainerStatuses, ScriptContainerName)
		}
		if gone || (st != nil && st.State.Terminated != nil) {
			if finalRead || gone {
				f.podEnd() // the pod log lost the marker: the pod may have pushed it
				return err
			}
			finalRead = true // the stream may have been cut before the end: read what is left once more
			continue
		}
		if err != nil {
			o.log.WithError(err).Debug("pod log stream ended; resuming")
		}
		if !backOff(ctx, &backoff, 5*time.Second) {
			return nil
		}
	}
}

// deleteJob deletes the Job in the foreground: its pods go first, and its Secret with it.
func (o *operation) deleteJob(ctx context.Context) {
	if _, err := o.deps.objects.deleteJob(context.WithoutCancel(ctx), o.name); err != nil {
		o.log.WithError(err).Warn("deleting Job")
	}
}

// pods returns the operation's pods as the informer holds them.
func (o *operation) pods() []*corev1.Pod {
	sel := labels.SelectorFromSet(labels.Set{LabelOperation: LabelValue(o.id)})
	pods, err := o.deps.pods.Pods(o.deps.namespace).List(sel)
	if err != nil {
		return nil
	}
	var mine []*corev1.Pod
	for _, p := range pods {
		if p.Annotations[AnnotationOperation] == o.id {
			mine = append(mine, p)
		}
	}
	return mine
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
