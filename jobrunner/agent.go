// Package jobrunner runs leased deployment operations as Kubernetes Jobs: one Secret and one batch/v1 Job
// per operation, followed through one label-filtered informer, its pod's sealed log shipped to the dispatch
// server in order and exactly once, and its result reported. The Agent also heartbeats, honours cancel and
// drain requests, re-adopts its Jobs after a restart and sweeps Jobs and Secrets nobody leases any more.
//
// Flow: lease loop → operation (Secret + Job) → informer (Job, pod, events) → follower (pod log) → shipper
// (batched AppendLogs) → result. Subpackages: logline (the sealed line format), podrunner (the in-pod runner).
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

	"github.com/sirupsen/logrus"
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
	checks   *checker // health checks; Run starts them
	beats    *beats   // the heartbeat loop's progress, for the probes
	metrics  *Metrics // served on /metrics by the HealthServer

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
	opsDone    sync.WaitGroup       // the goroutines supervising ops

	ready    atomic.Bool
	kubeWait atomic.Pointer[string] // why the agent waits for the Kubernetes API server at start (nil: it does not)
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
		running: a.running, log: a.log}
	a.checks = &checker{interval: cfg.CheckInterval, kube: deps.Kube, ns: cfg.Namespace, build: &a.cfg,
		workerID: deps.WorkerID, informers: &informerWatch{}, log: a.log.WithField("component", "health")}
	a.beats = &beats{interval: cfg.HeartbeatInterval}
	a.metrics = newMetrics(a)
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

// Health is the agent's own view of its health, as sent in heartbeats: unhealthy while it waits for the
// Kubernetes API server at start (startup.go); after that its last round of checks and what the self-update has
// to say (heartbeats add a refused upgrade of the release, which needs an API call).
func (a *Agent) Health() api.Health {
	if msg := a.kubeWait.Load(); msg != nil {
		return api.Health{OK: false, Message: *msg}
	}
	checks, at := a.checks.last()
	return healthOf(checks, at, a.updates.Note())
}

// Live says why the agent's heartbeat loop is stuck (the liveness probe restarts the container), or nil.
func (a *Agent) Live(now time.Time) error { return a.beats.stuck(now) }

// Readiness says why the agent cannot take work now (starting, a check fails, or the dispatch server did not
// answer the last heartbeat), or nil.
func (a *Agent) Readiness() error {
	checks, at := a.checks.last()
	answered, beatErr := a.beats.last()
	return unready(!a.Ready(), healthOf(checks, at), answered, beatErr)
}

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
	defer a.opsDone.Wait()
	if !a.waitForKube(ctx) {
		return nil // stopped while waiting for the API server
	}

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
	for name, inf := range map[string]cache.SharedIndexInformer{
		"jobs": jobInf.Informer(), "pods": podInf.Informer(), "secrets": secInf.Informer(), "events": evInf.Informer(),
	} {
		if err := a.checks.informers.watch(name, inf); err != nil {
			return fmt.Errorf("watching the %s informer: %w", name, err)
		}
	}
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

	if err := a.adopt(ctx); err != nil {
		return err
	}
	a.checks.round(ctx) // the first round of health checks, which the first heartbeat reports
	a.ready.Store(true)
	a.log.WithFields(logrus.Fields{"namespace": a.cfg.Namespace, "pools": a.cfg.Pools, "concurrency": a.cfg.Concurrency}).Info("worker agent running")
	if a.onReady != nil {
		a.onReady()
	}

	// The agent's runnables; each stops when ctx ends. Operations started by the leaser and the sweeper are
	// waited for separately (opsDone).
	runnables := []interface{ Start(context.Context) error }{
		a.heartbeater(),
		a.checks,
		&leaser{d: a.d, slots: a, log: a.log},
		&sweeper{interval: a.cfg.SweepInterval, d: a.d, ops: a, objects: a.objects(), jobs: a.jobs, secrets: a.secrets, log: a.log},
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, r := range runnables {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Start(ctx); err != nil && ctx.Err() == nil {
				a.log.WithError(err).Errorf("%T stopped", r)
				stop()
			}
		}()
	}
	<-ctx.Done()
	a.ready.Store(false)
	return nil
}

// heartbeater returns the agent's heartbeat.
func (a *Agent) heartbeater() *heartbeater {
	return &heartbeater{cfg: a.cfg, kube: a.kube, d: a.d, ops: a, updates: a.updates, checks: a.checks, beats: a.beats, log: a.log}
}

// adopt re-lists the leases the server holds for this worker and supervises each again.
func (a *Agent) adopt(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for {
		leases, err := a.d.Leases(ctx)
		if err == nil {
			if n := len(a.takeUp(ctx, leases)); n > 0 {
				a.log.WithField("operations", n).Info("re-adopting leased operations")
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

// takeUp supervises those of leases that nothing here supervises and that did not end here recently, and
// returns them: at start-up all of them (re-adoption), later a lease reply lost on the way or a long-poll
// cancelled as it was granted. It is the one place leases are adopted.
func (a *Agent) takeUp(ctx context.Context, leases []api.Lease) []api.Lease {
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
	a.mu.Unlock()
	for _, l := range unsupervised {
		a.start(ctx, l, true)
	}
	return unsupervised
}

// supervised returns the ids of the operations supervised now.
func (a *Agent) supervised() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.supervisedLocked()
}

func (a *Agent) supervisedLocked() []string {
	ids := make([]string, 0, len(a.ops))
	for id := range a.ops {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// status returns the operations supervised now, sorted, and whether the agent is draining.
func (a *Agent) status() ([]string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.supervisedLocked(), a.draining
}

// drain records whether the server asks to drain and whether a self-update is under way.
func (a *Agent) drain(asked, updating bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if asked != a.drainAsked {
		a.drainAsked = asked
		if asked {
			a.log.Info("dispatch server asked to drain: no new operations")
		} else {
			a.log.Info("dispatch server ended the drain: taking operations again")
		}
	}
	a.setDrainingLocked(updating)
}

// cancel asks those of ids that are supervised here to cancel.
func (a *Agent) cancel(ids []string) {
	a.mu.Lock()
	var cancel []*operation
	for _, id := range ids {
		if op := a.ops[id]; op != nil {
			cancel = append(cancel, op)
		}
	}
	a.mu.Unlock()
	for _, op := range cancel {
		op.log.Info("cancel requested by the dispatch server")
		op.requestCancel()
	}
}

// arm returns, when a slot is free and the agent is not draining, a context for one long-poll, which a drain
// that starts meanwhile cancels (setDrainingLocked), so the server hands nothing more to a draining worker;
// checking and arming happen under one lock so none slips between. Otherwise it returns a channel closed when
// operations end or draining changes.
func (a *Agent) arm(ctx context.Context) (context.Context, context.CancelFunc, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ops) >= a.cfg.Concurrency || a.draining {
		return nil, nil, a.changed
	}
	pollCtx, cancelPoll := context.WithCancel(ctx)
	a.cancelPoll = cancelPoll
	return pollCtx, cancelPoll, nil
}

// disarm forgets the long-poll that arm armed.
func (a *Agent) disarm() {
	a.mu.Lock()
	a.cancelPoll = nil
	a.mu.Unlock()
}

// start supervises a leased operation (adopt: one this worker may have started before) until ctx ends.
func (a *Agent) start(ctx context.Context, lease api.Lease, adopt bool) {
	a.mu.Lock()
	if _, ok := a.ops[lease.Operation.ID]; ok {
		a.mu.Unlock()
		return
	}
	op := newOperation(a.operationDeps(), lease, adopt)
	a.ops[op.id] = op
	a.mu.Unlock()
	a.opsDone.Add(1)
	go func() {
		defer a.opsDone.Done()
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
		metrics: a.metrics,
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
