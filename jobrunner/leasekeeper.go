package jobrunner

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Lease keeping. A worker pod counts as running when it is Ready, or when its containers started less than
// workerStartGrace ago (it heartbeats as soon as it has re-adopted its Jobs, a little before its readiness
// probe passes); a crash-looping pod spends its back-off waiting, so the keeper renews meanwhile.
const (
	workerStartGrace = 30 * time.Second
	keeperTick       = time.Second
	keeperRetry      = 5 * time.Second
)

// leaseRenewer is what a LeaseKeeper needs from the dispatch server (the client with the worker's token).
type leaseRenewer interface {
	Leases(ctx context.Context) ([]api.Lease, error)
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error)
}

// LeaseKeeper heartbeats for a worker while none of its pods runs: during a self-update the old worker stops
// before the new one starts (or, when the upgrade fails, during Helm's wait and the rollback), and a lease that
// no heartbeat renews within the server's lease TTL makes its operation lost. It lists every lease the server
// holds for the worker, reports the worker's old version, capacity 0 and draining, and renews at a quarter of
// the server's lease TTL. The self-update Job runs one (chartgen/selfupdate).
type LeaseKeeper struct {
	Dispatcher   leaseRenewer
	Kube         kubernetes.Interface
	Namespace    string
	WorkerPods   string // label selector of the worker's pods
	Job          string // the self-update Job, named in the health message
	FromVersion  string
	ToVersion    string
	Capabilities []string // what the worker advertises (a heartbeat replaces them)
	Log          logrus.FieldLogger
}

// Run keeps the leases until ctx ends (the upgrade, and any rollback, has finished).
func (k *LeaseKeeper) Run(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(k.Kube, 0, informers.WithNamespace(k.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = k.WorkerPods }))
	pods := factory.Core().V1().Pods().Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return // ctx ended first
		}
	}

	tick := time.NewTicker(keeperTick)
	defer tick.Stop()
	var next time.Time // zero: renew as soon as no worker runs
	for {
		if now := time.Now(); !now.Before(next) && !workerRunning(pods, k.Namespace, now) {
			n, ttl, err := k.renew(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				k.Log.WithError(err).Warn("renewing the worker's leases failed; retrying")
				next = now.Add(keeperRetry)
			case err == nil:
				next = now.Add(min(max(ttl/4, 2*time.Second), 30*time.Second))
				k.Log.WithFields(logrus.Fields{"leases": n, "lease_ttl": ttl}).Info("no worker runs: renewed its leases")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// renew sends one heartbeat for the worker listing all its leases. It returns how many it renewed and the
// server's lease TTL.
func (k *LeaseKeeper) renew(ctx context.Context) (int, time.Duration, error) {
	n, resp, err := heartbeatLeases(ctx, k.Dispatcher, api.HeartbeatRequest{
		Version: k.FromVersion, Capacity: 0, Capabilities: k.Capabilities, Draining: true,
	}, func(leases int) api.Health {
		return api.Health{OK: true, Message: fmt.Sprintf("upgrading from %s to %s (self-update Job %s): no worker pod runs; the Job keeps the leases of %d operations alive, whose Jobs keep running",
			k.FromVersion, k.ToVersion, k.Job, leases)}
	})
	if err != nil {
		return 0, 0, err
	}
	return n, time.Duration(resp.LeaseTTL) * time.Second, nil
}

// workerRunning reports whether a worker pod runs (and so heartbeats itself), per the lister.
func workerRunning(pods corelisters.PodLister, namespace string, now time.Time) bool {
	list, err := pods.Pods(namespace).List(labels.Everything())
	if err != nil {
		return false
	}
	for _, p := range list {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		if PodReady(p) || justStarted(p, now) {
			return true
		}
	}
	return false
}

// PodReady reports a pod's Ready condition.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// justStarted reports whether every container of the pod runs and the latest started less than
// workerStartGrace ago.
func justStarted(p *corev1.Pod, now time.Time) bool {
	if len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	var latest time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running == nil {
			return false
		}
		if t := cs.State.Running.StartedAt.Time; t.After(latest) {
			latest = t
		}
	}
	return now.Sub(latest) < workerStartGrace
}
