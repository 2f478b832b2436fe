package jobrunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// checkTimeout bounds one check of a round.
const checkTimeout = 10 * time.Second

// permission is one thing the agent does in its namespace: a verb on a resource (group "" is the core group;
// resource may name a subresource, "pods/log").
type permission struct {
	verb, group, resource string
}

func (p permission) String() string {
	if p.group == "" {
		return p.verb + " " + p.resource
	}
	return p.verb + " " + p.resource + "." + p.group
}

// agentPermissions is every call the agent makes in its namespace to run operations, the one list the
// permissions check asks about (the chart's Role grants them): Jobs and Secrets through kubeObjects and the
// informers, pods and events through the informers, pod logs through the follower, and pods/create for the
// admission check's dry run. Self-update needs more (the release's own objects); its Preflight says so.
var agentPermissions = []permission{
	{"get", "batch", "jobs"}, {"list", "batch", "jobs"}, {"watch", "batch", "jobs"},
	{"create", "batch", "jobs"}, {"delete", "batch", "jobs"},
	{"list", "", "pods"}, {"watch", "", "pods"}, {"create", "", "pods"},
	{"get", "", "pods/log"},
	{"get", "", "secrets"}, {"list", "", "secrets"}, {"watch", "", "secrets"},
	{"create", "", "secrets"}, {"patch", "", "secrets"}, {"delete", "", "secrets"},
	{"list", "", "events"}, {"watch", "", "events"},
}

// checker runs the agent's health checks at start and every Config.CheckInterval, and keeps the last round
// for heartbeats and the readiness probe. The dispatch server's answer is not one of its checks: the
// heartbeat itself tells it (beats).
type checker struct {
	interval  time.Duration
	kube      kubernetes.Interface
	ns        string
	build     *Config // builds the dry-run Job like a real operation's
	workerID  string
	informers *informerWatch
	log       *logrus.Entry

	roundMu sync.Mutex // one round at a time

	mu     sync.Mutex
	checks []api.Check // the last round, in checkNames order; nil before the first
	at     time.Time   // when it began
}

// checkNames are the checks of a round, in the order they are reported.
var checkNames = []string{api.CheckKubernetesAPI, api.CheckInformers, api.CheckPermissions, api.CheckScriptPodAdmission}

// Start runs a round every interval until ctx ends. The agent runs the first round itself, once its informers
// have synced, before it reports ready.
func (c *checker) Start(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.round(ctx)
		case <-ctx.Done():
			return nil
		}
	}
}

// last returns the last round's checks and when it began (nil: no round yet).
func (c *checker) last() ([]api.Check, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.checks), c.at
}

// round runs every check, at once, and keeps the results; it logs the checks whose result changed.
func (c *checker) round(ctx context.Context) {
	c.roundMu.Lock()
	defer c.roundMu.Unlock()
	at := time.Now().UTC()
	run := map[string]func(context.Context) string{
		api.CheckKubernetesAPI:      c.kubernetesAPI,
		api.CheckInformers:          func(context.Context) string { return c.informers.problem(time.Now(), 2*c.interval) },
		api.CheckPermissions:        c.permissions,
		api.CheckScriptPodAdmission: c.scriptPodAdmission,
	}
	checks := make([]api.Check, len(checkNames))
	var wg sync.WaitGroup
	for i, name := range checkNames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			msg := run[name](cctx)
			checks[i] = api.Check{Name: name, OK: msg == "", Message: capMessage(msg, api.MaxMessageLen)}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // cut short: keep the last complete round
	}
	c.mu.Lock()
	before := c.checks
	c.checks, c.at = checks, at
	c.mu.Unlock()
	for i, ch := range checks {
		switch {
		case !ch.OK && (before == nil || before[i] != ch):
			c.log.WithField("check", ch.Name).Warn("health check failed: " + ch.Message)
		case ch.OK && before != nil && !before[i].OK:
			c.log.WithField("check", ch.Name).Info("health check passes again")
		}
	}
}

// kubernetesAPI asks the API server whether it is ready (/readyz, which every authenticated client may read).
func (c *checker) kubernetesAPI(ctx context.Context) string {
	if _, err := c.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return "the Kubernetes API server does not answer /readyz: " + err.Error()
	}
	return ""
}

// permissions asks the API server, one SelfSubjectAccessReview each, whether the agent may do what it does.
func (c *checker) permissions(ctx context.Context) string {
	var denied []permission
	var errs []string
	for _, p := range agentPermissions {
		res, sub, _ := strings.Cut(p.resource, "/")
		r, err := c.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: c.ns, Verb: p.verb, Group: p.group, Resource: res, Subresource: sub,
			}},
		}, metav1.CreateOptions{})
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("cannot ask whether it may %s: %v", p, err))
			if ctx.Err() != nil {
				return strings.Join(errs, "; ")
			}
		case !r.Status.Allowed:
			denied = append(denied, p)
		}
	}
	return permissionsProblem(c.ns, denied, errs)
}

// permissionsProblem says what the agent may not do (denied) or could not ask (errs), or "".
func permissionsProblem(ns string, denied []permission, errs []string) string {
	var parts []string
	if len(denied) > 0 {
		names := make([]string, len(denied))
		for i, p := range denied {
			names[i] = p.String()
		}
		parts = append(parts, fmt.Sprintf("may not %s in namespace %s: grant them in the worker's Role (the chart's Role does)",
			strings.Join(names, ", "), ns))
	}
	return strings.Join(append(parts, errs...), "; ")
}

// dryRunName names the dry-run Job and pod of the admission check (never stored: nothing lists them).
const dryRunName = "octo-health-check"

// scriptPodAdmission creates, as a server-side dry run, the Job of an operation built like a real one, and
// the pod its template makes: Pod Security and most quotas apply to pods, not to Jobs. Admission (Pod
// Security, ResourceQuota, LimitRanger, webhooks) runs; nothing is stored. It does so for the default pod
// and each profile's, so a profile that admission refuses makes the worker unhealthy, named.
func (c *checker) scriptPodAdmission(ctx context.Context) string {
	problems := c.admitted(ctx, "", "a script")
	for _, p := range c.build.ProfileNames() {
		problems = append(problems, c.admitted(ctx, p, "the script (profile "+p+")")...)
	}
	return strings.Join(problems, "; ")
}

// admitted dry-runs the Job and pod of a step naming profile; what names them in problems.
func (c *checker) admitted(ctx context.Context, profile, what string) []string {
	lease := &api.Lease{LeaseID: dryRunName, Operation: api.Operation{ID: dryRunName, OperationSpec: api.OperationSpec{Pool: c.build.Pools[0], Syntax: "sh", Profile: profile}}}
	requests, _, err := c.build.RequestsFor(&lease.Operation)
	if err != nil {
		return []string{what + ": " + err.Error()}
	}
	job := c.build.BuildJob(c.workerID, lease, requests)
	job.Name = dryRunName
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	var problems []string
	if _, err := c.kube.BatchV1().Jobs(c.ns).Create(ctx, job, dry); err != nil {
		problems = append(problems, what+" Job is refused: "+err.Error())
	}
	pod := &corev1.Pod{ObjectMeta: *job.Spec.Template.ObjectMeta.DeepCopy(), Spec: *job.Spec.Template.Spec.DeepCopy()}
	pod.Name, pod.Namespace = dryRunName, c.ns
	if _, err := c.kube.CoreV1().Pods(c.ns).Create(ctx, pod, dry); err != nil {
		problems = append(problems, what+" pod is refused: "+err.Error())
	}
	return problems
}

// informerWatch follows the agent's informers for the informers check: whether each has synced, and when
// its list or watch last failed.
type informerWatch struct {
	mu        sync.Mutex
	informers []namedInformer
	failures  map[string]watchFailure // by informer
}

type namedInformer struct {
	name   string
	synced cache.InformerSynced
}

type watchFailure struct {
	at  time.Time
	err string
}

// watch follows inf, named name; call it before the informer starts.
func (w *informerWatch) watch(name string, inf cache.SharedIndexInformer) error {
	w.mu.Lock()
	w.informers = append(w.informers, namedInformer{name, inf.HasSynced})
	w.mu.Unlock()
	return inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		cache.DefaultWatchErrorHandler(ctx, r, err)
		if watchTrouble(err) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.failures == nil {
				w.failures = map[string]watchFailure{}
			}
			w.failures[name] = watchFailure{at: time.Now(), err: err.Error()}
		}
	})
}

// watchTrouble tells an informer's list or watch failure from the normal end of a watch: an expired resource
// version (the informer lists again) and a closed connection are normal.
func watchTrouble(err error) bool {
	return !(apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF))
}

// problem says which informers have not synced or failed to list or watch within window before now, or "".
func (w *informerWatch) problem(now time.Time, window time.Duration) string {
	if w == nil {
		return "the informers have not started"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.informers) == 0 {
		return "the informers have not started"
	}
	var unsynced []string
	for _, inf := range w.informers {
		if !inf.synced() {
			unsynced = append(unsynced, inf.name)
		}
	}
	return informersProblem(unsynced, w.failures, now, window)
}

// informersProblem says which informers have not synced (unsynced) and which failed within window before now.
func informersProblem(unsynced []string, failures map[string]watchFailure, now time.Time, window time.Duration) string {
	var parts []string
	if len(unsynced) > 0 {
		parts = append(parts, "not synced: "+strings.Join(unsynced, ", "))
	}
	names := make([]string, 0, len(failures))
	for name := range failures {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if f := failures[name]; now.Sub(f.at) <= window {
			parts = append(parts, fmt.Sprintf("the %s informer failed to list or watch %s ago: %s", name, now.Sub(f.at).Round(time.Second), f.err))
		}
	}
	return strings.Join(parts, "; ")
}
