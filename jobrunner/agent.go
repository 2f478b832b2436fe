// Package jobrunner runs leased deployment operations as Kubernetes Jobs: one Secret and one batch/v1 Job
// per operation, followed through one label-filtered informer, its pod's sealed log shipped to the dispatch
// server in order and exactly once, and its result reported. The Agent also heartbeats, honours cancel and
// drain requests, re-adopts its Jobs after a restart and sweeps Jobs and Secrets nobody leases any more.
//
// Flow: lease loop → operation (Secret + Job) → informer (Job, pod, events) → follower (pod log) → shipper
// (batched AppendLogs) → result. Subpackages: logline (the sealed line format), runner (the in-pod runner).
package jobrunner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Deps are the agent's collaborators.
type Deps struct {
	Kube       kubernetes.Interface
	Dispatcher Dispatcher
	WorkerID   string         // from registration (see EnsureIdentity)
	Log        *logrus.Logger // the agent derives entries with component=jobrunner
	Updater    Updater        // nil: self-update disabled (a version mismatch is reported, nothing more)
	// FetchChart downloads the chart a heartbeat names and checks it against the SHA-256 the server announced
	// (required with an Updater).
	FetchChart func(ctx context.Context, url, sha256 string) ([]byte, error)
	// OnReady, if set, is called once, when the agent has synced its informers and re-adopted its Jobs.
	OnReady func()
}

// Agent leases operations and runs each as a Job. Run it with Run; Ready and Health feed the probes.
type Agent struct {
	cfg      Config
	workerID string
	kube     kubernetes.Interface
	d        Dispatcher
	onReady  func()
	log      *logrus.Entry
	logs     podLogs
	updates  *selfUpdates

	jobs    batchlisters.JobLister
	pods    corelisters.PodLister
	secrets corelisters.SecretLister

	mu         sync.Mutex
	ops        map[string]*operation
	ended      map[string]time.Time // operations supervised here that ended recently (the sweeper skips them)
	draining   bool                 // no new leases: drainAsked, or a self-update is under way
	drainAsked bool                 // the server asked to drain
	cancelPoll context.CancelFunc   // ends the lease long-poll in flight, if any
	changed    chan struct{}        // closed and replaced when ops shrink or draining changes

	ready atomic.Bool
}

// New returns an agent for a validated configuration.
func New(cfg Config, deps Deps) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if deps.Kube == nil || deps.Dispatcher == nil || deps.Log == nil || deps.WorkerID == "" {
		return nil, errors.New("jobrunner.New: Kube, Dispatcher, Log and WorkerID are required")
	}
	a := &Agent{
		cfg: cfg, workerID: deps.WorkerID, kube: deps.Kube, d: deps.Dispatcher,
		onReady: deps.OnReady,
		log:     deps.Log.WithFields(logrus.Fields{"component": "jobrunner", "worker": deps.WorkerID}),
		logs:    kubeLogs{kube: deps.Kube, namespace: cfg.Namespace},
		ops:     map[string]*operation{},
		ended:   map[string]time.Time{},
		changed: make(chan struct{}),
	}
	a.updates = &selfUpdates{updater: deps.Updater, fetchChart: deps.FetchChart, version: cfg.Version,
		running: a.running, log: a.log, health: api.Health{OK: true}}
	if deps.Updater != nil && deps.FetchChart == nil {
		return nil, errors.New("jobrunner.New: an Updater needs FetchChart (the dispatch client's authenticated, checksummed download)")
	}
	return a, nil
}

// objects reads, creates and deletes the Jobs and Secrets of operations in the agent's namespace.
func (a *Agent) objects() kubeObjects { return kubeObjects{kube: a.kube, ns: a.cfg.Namespace} }

// Selector is the label selector of everything this worker creates.
func (a *Agent) Selector() labels.Selector { return WorkerSelector(a.workerID) }

// Ready reports whether the agent has synced its informer and re-adopted its Jobs.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Health is the agent's own view of its health, as sent in heartbeats.
func (a *Agent) Health() api.Health { return a.updates.Health() }

// running is how many operations the agent supervises now.
func (a *Agent) running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ops)
}

// Run runs the agent until ctx ends (SIGTERM: the pod is being replaced). Stopping, it delivers the log lines
// it has read (within shutdownFlush) and reports nothing more: Jobs keep running, their Jobs and Secrets stay,
// and the next agent with this identity (restarted, or the new version after a self-update) re-adopts them.
func (a *Agent) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()

	// One informer factory, filtered on this worker's label, serves Jobs, pods and Secrets; events cannot be
	// label-filtered and come from a second informer on the namespace.
	sel := a.Selector().String()
	factory := informers.NewSharedInformerFactoryWithOptions(a.kube, 0, informers.WithNamespace(a.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel }))
	events := informers.NewSharedInformerFactoryWithOptions(a.kube, 0, informers.WithNamespace(a.cfg.Namespace))
	jobInf, podInf, secInf := factory.Batch().V1().Jobs(), factory.Core().V1().Pods(), factory.Core().V1().Secrets()
	evInf := events.Core().V1().Events()
	a.jobs, a.pods, a.secrets = jobInf.Lister(), podInf.Lister(), secInf.Lister()
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.kickFor(obj) },
		UpdateFunc: func(_, obj any) { a.kickFor(obj) },
		DeleteFunc: func(obj any) { a.kickFor(obj) },
	}
	for _, inf := range []cache.SharedIndexInformer{jobInf.Informer(), podInf.Informer()} {
		if _, err := inf.AddEventHandler(kick); err != nil {
			return fmt.Errorf("adding informer handler: %w", err)
		}
	}
	secInf.Informer() // registered so the factory starts it (the sweeper reads it)
	if _, err := evInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onEvent(obj) },
		UpdateFunc: func(_, obj any) { a.onEvent(obj) },
	}); err != nil {
		return fmt.Errorf("adding event handler: %w", err)
	}
	factory.Start(ctx.Done())
	events.Start(ctx.Done())
	defer events.Shutdown()
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing %v informer: %w", typ, context.Cause(ctx))
		}
	}
	for typ, ok := range events.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing %v informer: %w", typ, context.Cause(ctx))
		}
	}

	if err := a.adopt(ctx, &wg); err != nil {
		return err
	}
	a.ready.Store(true)
	a.log.WithFields(logrus.Fields{"namespace": a.cfg.Namespace, "pools": a.cfg.Pools, "concurrency": a.cfg.Concurrency}).Info("worker agent running")
	if a.onReady != nil {
		a.onReady()
	}

	wg.Add(3)
	go func() { defer wg.Done(); a.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); a.leaseLoop(ctx, &wg) }()
	go func() { defer wg.Done(); a.sweepLoop(ctx, &wg) }()
	<-ctx.Done()
	a.ready.Store(false)
	return nil
}

// adopt re-lists the leases the server holds for this worker and supervises each again.
func (a *Agent) adopt(ctx context.Context, wg *sync.WaitGroup) error {
	backoff := 500 * time.Millisecond
	for {
		leases, err := a.d.Leases(ctx)
		if err == nil {
			for _, l := range leases {
				a.start(ctx, wg, l, true)
			}
			if len(leases) > 0 {
				a.log.WithField("operations", len(leases)).Info("re-adopting leased operations")
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		a.log.WithError(err).Warn("listing this worker's leases failed; retrying")
		if !backOff(ctx, &backoff, 10*time.Second) {
			return nil
		}
	}
}

func (a *Agent) start(ctx context.Context, wg *sync.WaitGroup, lease api.Lease, adopt bool) {
	a.mu.Lock()
	if _, ok := a.ops[lease.Operation.ID]; ok {
		a.mu.Unlock()
		return
	}
	op := newOperation(a.operationDeps(), lease, adopt)
	a.ops[op.id] = op
	a.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		op.run(ctx)
		a.mu.Lock()
		delete(a.ops, op.id)
		if ctx.Err() == nil {
			a.ended[op.id] = time.Now()
		}
		a.broadcastLocked()
		a.mu.Unlock()
	}()
}

// setDrainingLocked drains while the server asks to or a self-update is under way (updating: the
// selfUpdates' Waiting, read before a.mu is taken).
func (a *Agent) setDrainingLocked(updating bool) {
	if d := a.drainAsked || updating; d != a.draining {
		a.draining = d
		if d && a.cancelPoll != nil {
			a.cancelPoll()
		}
		a.broadcastLocked()
	}
}

func (a *Agent) broadcastLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// leaseLoop long-polls for operations while the agent has a free slot and is not draining.
func (a *Agent) leaseLoop(ctx context.Context, wg *sync.WaitGroup) {
	backoff := time.Second
	for {
		// A drain that starts while the long-poll waits cancels it (setDrainingLocked), so the server hands
		// nothing more to a draining worker; checking and arming happen under one lock so none slips between.
		a.mu.Lock()
		full := len(a.ops) >= a.cfg.Concurrency || a.draining
		ch := a.changed
		var pollCtx context.Context
		var cancelPoll context.CancelFunc
		if !full {
			pollCtx, cancelPoll = context.WithCancel(ctx)
			a.cancelPoll = cancelPoll
		}
		a.mu.Unlock()
		if full {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return
			}
		}
		lease, err := a.d.Lease(pollCtx, api.MaxLeaseWait)
		a.mu.Lock()
		a.cancelPoll = nil
		a.mu.Unlock()
		drained := pollCtx.Err() != nil
		cancelPoll()
		if ctx.Err() != nil {
			return
		}
		if drained && lease == nil {
			continue
		}
		if err != nil {
			a.log.WithError(err).WithField("retry_in", backoff).Warn("leasing failed")
			if !backOff(ctx, &backoff, 30*time.Second) {
				return
			}
			continue
		}
		backoff = time.Second
		if lease != nil {
			a.log.WithFields(logrus.Fields{"operation": lease.Operation.ID, "lease": lease.LeaseID}).Info("leased operation")
			a.start(ctx, wg, *lease, false)
		}
	}
}

// refusal returns why a worker with capabilities cannot run op, or "".
func refusal(capabilities []string, op *api.Operation) string {
	var missing []string
	for _, c := range op.Capabilities {
		if !slices.Contains(capabilities, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	msg := fmt.Sprintf("this worker lacks the capabilities %s that the step requires", strings.Join(missing, ", "))
	if slices.Contains(missing, api.CapabilityDocker) {
		msg += "; " + api.NoDocker + ", so steps that build or run containers, or use Docker images as packages, need a worker with Docker"
	}
	return msg
}

// operationDeps hands an operation what it needs of the agent, and nothing else.
func (a *Agent) operationDeps() operationDeps {
	return operationDeps{
		namespace: a.cfg.Namespace, version: a.cfg.Version, workerID: a.workerID, capabilities: a.cfg.Capabilities,
		limits: limits{PendingTimeout: a.cfg.PendingTimeout, ImagePullGrace: a.cfg.ImagePullGrace},
		build:  &a.cfg, objects: a.objects(), jobs: a.jobs, pods: a.pods, logs: a.logs, d: a.d, log: a.log,
	}
}

func (a *Agent) kickFor(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	a.mu.Lock()
	op := a.ops[m.GetAnnotations()[AnnotationOperation]]
	a.mu.Unlock()
	if op != nil {
		op.notify()
	}
}

// heartbeatLoop reports health and running operations, and acts on cancel, drain and version requests.
// The interval is worker.heartbeatInterval, or the server's heartbeat_seconds when that is shorter (cancel
// requests travel in heartbeat replies).
func (a *Agent) heartbeatLoop(ctx context.Context) {
	interval := a.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s, again := a.heartbeat(ctx)
		if s > 0 && s < a.cfg.HeartbeatInterval && s != interval {
			interval = s
			t.Reset(interval)
		}
		if again && ctx.Err() == nil {
			continue
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// heartbeat sends one heartbeat and acts on the reply; it returns the server's preferred interval (0: none) and
// whether to send the next one at once (a drain for a self-update began: the server hears of it before the
// upgrade starts).
func (a *Agent) heartbeat(ctx context.Context) (time.Duration, bool) {
	refused := refusedUpgrade(ctx, a.kube, a.cfg.Namespace, a.cfg.Release)
	health := a.updates.Health()
	a.mu.Lock()
	running := make([]string, 0, len(a.ops))
	for id := range a.ops {
		running = append(running, id)
	}
	sort.Strings(running)
	// Every health message the worker sends passes here, capped to the server's limit (it refuses the whole
	// heartbeat otherwise, and with it the renewal of every lease).
	if refused != "" {
		health.Message = strings.TrimPrefix(health.Message+"; "+refused, "; ")
	}
	health.Message = capMessage(health.Message, api.MaxMessageLen)
	req := api.HeartbeatRequest{
		Version: a.cfg.Version, Capacity: a.cfg.Concurrency, Capabilities: a.cfg.Capabilities,
		Running: running, Health: health, Draining: a.draining,
	}
	a.mu.Unlock()
	resp, err := a.d.Heartbeat(ctx, req)
	if err != nil {
		if ctx.Err() == nil {
			a.log.WithError(err).Warn("heartbeat failed")
		}
		return 0, false
	}
	updating := a.updates.Waiting()
	a.mu.Lock()
	if resp.Drain != a.drainAsked {
		a.drainAsked = resp.Drain
		if resp.Drain {
			a.log.Info("dispatch server asked to drain: no new operations")
		} else {
			a.log.Info("dispatch server ended the drain: taking operations again")
		}
		a.setDrainingLocked(updating)
	}
	var cancel []*operation
	for _, id := range resp.Cancel {
		if op := a.ops[id]; op != nil {
			cancel = append(cancel, op)
		}
	}
	a.mu.Unlock()
	for _, op := range cancel {
		op.log.Info("cancel requested by the dispatch server")
		op.requestCancel()
	}
	again := false
	if resp.DesiredVersion != "" && resp.DesiredVersion != a.cfg.Version {
		again = a.updates.want(ctx, resp)
	} else {
		a.updates.versionsAgree()
	}
	updating = a.updates.Waiting()
	a.mu.Lock()
	a.setDrainingLocked(updating)
	a.mu.Unlock()
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

// sweepLoop deletes Jobs and Secrets of operations that are neither supervised here nor leased to this worker
// by the server: leftovers of a crash between creating a Secret and its Job, or of leases that expired.
func (a *Agent) sweepLoop(ctx context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(a.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if err := a.Sweep(ctx, func(l api.Lease) { a.start(ctx, wg, l, true) }); err != nil && ctx.Err() == nil {
			a.log.WithError(err).Warn("sweeping orphaned Jobs and Secrets")
		}
	}
}

// Sweep runs one sweep. Finished Jobs are left to ttlSecondsAfterFinished; objects younger than one sweep
// interval are left alone (their lease may be in flight). adopt (may be nil) takes up leases that nothing here
// supervises.
func (a *Agent) Sweep(ctx context.Context, adopt func(api.Lease)) error {
	leases, err := a.d.Leases(ctx)
	if err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	keep := map[string]bool{}
	for _, l := range leases {
		keep[l.Operation.ID] = true
	}
	a.mu.Lock()
	var unsupervised []api.Lease
	for id, at := range a.ended {
		if time.Since(at) > 10*a.cfg.SweepInterval {
			delete(a.ended, id)
		}
	}
	for _, l := range leases {
		if _, ended := a.ended[l.Operation.ID]; a.ops[l.Operation.ID] == nil && !ended {
			unsupervised = append(unsupervised, l)
		}
	}
	for id := range a.ops {
		keep[id] = true
	}
	a.mu.Unlock()
	// Leases the server holds for this worker that nobody here supervises (a lease reply lost on the way, a
	// long-poll cancelled as it was granted): take them up, or they would expire as lost.
	if adopt != nil {
		for _, l := range unsupervised {
			a.log.WithField("operation", l.Operation.ID).Warn("taking up a lease this worker holds but did not supervise")
			adopt(l)
		}
	}
	young := time.Now().Add(-a.cfg.SweepInterval)
	jobs, err := a.jobs.Jobs(a.cfg.Namespace).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing Jobs: %w", err)
	}
	objs := a.objects()
	for _, j := range jobs {
		id := j.Annotations[AnnotationOperation]
		if keep[id] || j.DeletionTimestamp != nil || j.CreationTimestamp.Time.After(young) ||
			jobCondition(j, batchv1.JobComplete, batchv1.JobFailed) != nil {
			continue
		}
		a.log.WithFields(logrus.Fields{"operation": id, "job": j.Name}).Warn("deleting Job of an operation no longer leased to this worker")
		if _, err := objs.deleteJob(ctx, j.Name); err != nil {
			return fmt.Errorf("deleting Job %s: %w", j.Name, err)
		}
	}
	secrets, err := a.secrets.Secrets(a.cfg.Namespace).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing Secrets: %w", err)
	}
	for _, s := range secrets {
		id := s.Annotations[AnnotationOperation]
		if keep[id] || len(s.OwnerReferences) > 0 || s.DeletionTimestamp != nil || s.CreationTimestamp.Time.After(young) {
			continue
		}
		a.log.WithFields(logrus.Fields{"operation": id, "secret": s.Name}).Warn("deleting Secret of an operation no longer leased to this worker")
		if _, err := objs.deleteSecret(ctx, s.Name); err != nil {
			return fmt.Errorf("deleting Secret %s: %w", s.Name, err)
		}
	}
	return nil
}
