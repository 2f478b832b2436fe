package selfupdate

import (
	"context"
	"encoding/json"
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
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// WorkerLink tells the self-update Job how to keep the upgrading worker's leases alive: the agent starts the
// upgrade while its operations' Jobs run, and between the old worker's end and the new worker's start (or,
// when the upgrade fails, Helm's wait plus the rollback) nobody else heartbeats for it. A lease that no
// heartbeat renews within the dispatch server's lease TTL makes its operation lost, so the Job heartbeats for
// the worker while no worker pod runs. It travels as JSON in the chart ConfigMap's AnnotWorker annotation.
type WorkerLink struct {
	Server         string   `json:"server"`          // the dispatch server's URL, as the worker uses it
	IdentitySecret string   `json:"identity_secret"` // the Secret that holds the worker's id and token
	Capabilities   []string `json:"capabilities"`    // what the worker advertises (heartbeats replace them)
}

// AnnotWorker holds the WorkerLink on the chart ConfigMap.
const AnnotWorker = "octo-worker.io/worker"

// Lease keeping. A worker pod counts as running when it is Ready, or when its containers started less than
// workerStartGrace ago (it heartbeats as soon as it has re-adopted its Jobs, a little before its readiness
// probe passes); a crash-looping pod spends its back-off waiting, so the keeper renews meanwhile.
const (
	workerStartGrace = 30 * time.Second
	keeperTick       = time.Second
	keeperRetry      = 5 * time.Second
)

// workerAPI is what the keeper needs from the dispatch server (*client.Client with the worker's token).
type workerAPI interface {
	Leases(ctx context.Context) ([]api.Lease, error)
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error)
}

// leaseKeeper heartbeats for a worker, listing every lease the server holds for it, while no worker pod of the
// release runs. It reports the worker's old version, capacity 0 and draining, and renews at a quarter of the
// server's lease TTL.
type leaseKeeper struct {
	d            workerAPI
	kube         kubernetes.Interface
	namespace    string
	release      string
	job          string
	fromVersion  string
	toVersion    string
	capabilities []string
	log          logrus.FieldLogger
}

// newLeaseKeeper reads the link from the chart ConfigMap and the worker's identity from its Secret. It returns
// nil (and no error) when the ConfigMap carries no link: the agent that started the upgrade had no
// operations' leases to keep, or predates lease keeping.
func newLeaseKeeper(ctx context.Context, kube kubernetes.Interface, cm *corev1.ConfigMap, release string, log logrus.FieldLogger) (*leaseKeeper, error) {
	raw := cm.Annotations[AnnotWorker]
	if raw == "" {
		return nil, nil
	}
	var link WorkerLink
	if err := json.Unmarshal([]byte(raw), &link); err != nil {
		return nil, fmt.Errorf("reading annotation %s of ConfigMap %s: %w", AnnotWorker, cm.Name, err)
	}
	id, _, err := jobrunner.EnsureIdentity(ctx, kube, cm.Namespace, link.IdentitySecret, nil)
	if err != nil {
		return nil, fmt.Errorf("reading the worker's identity to keep its leases: %w", err)
	}
	c, err := client.New(client.Config{Server: link.Server, Token: id.Token, UserAgent: "octo-worker-self-update/" + cm.Annotations[AnnotFromVersion]})
	if err != nil {
		return nil, fmt.Errorf("worker link of ConfigMap %s: %w", cm.Name, err)
	}
	return &leaseKeeper{
		d: c, kube: kube, namespace: cm.Namespace, release: release, job: cm.Name,
		fromVersion: cm.Annotations[AnnotFromVersion], toVersion: cm.Annotations[AnnotVersion],
		capabilities: link.Capabilities, log: log.WithField("worker", id.WorkerID),
	}, nil
}

// Run keeps the leases until ctx ends (the upgrade, and any rollback, has finished).
func (k *leaseKeeper) Run(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(k.kube, 0, informers.WithNamespace(k.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = workerPodSelector(k.release) }))
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
		if now := time.Now(); !now.Before(next) && !workerRunning(pods, k.namespace, now) {
			n, ttl, err := k.renew(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				k.log.WithError(err).Warn("renewing the worker's leases failed; retrying")
				next = now.Add(keeperRetry)
			case err == nil:
				next = now.Add(min(max(ttl/4, 2*time.Second), 30*time.Second))
				k.log.WithFields(logrus.Fields{"leases": n, "lease_ttl": ttl}).Info("no worker runs: renewed its leases")
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
func (k *leaseKeeper) renew(ctx context.Context) (int, time.Duration, error) {
	leases, err := k.d.Leases(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("listing the worker's leases: %w", err)
	}
	running := make([]string, 0, len(leases))
	for _, l := range leases {
		running = append(running, l.Operation.ID)
	}
	msg := fmt.Sprintf("upgrading from %s to %s (self-update Job %s): no worker pod runs; the Job keeps the leases of %d operations alive, whose Jobs keep running",
		k.fromVersion, k.toVersion, k.job, len(running))
	resp, err := k.d.Heartbeat(ctx, api.HeartbeatRequest{
		Version: k.fromVersion, Capacity: 0, Capabilities: k.capabilities, Running: running, Draining: true,
		Health: api.Health{OK: true, Message: clip(msg, maxReason)},
	})
	if err != nil {
		return 0, 0, fmt.Errorf("heartbeating for the worker: %w", err)
	}
	return len(running), time.Duration(resp.LeaseTTL) * time.Second, nil
}

func workerPodSelector(release string) string {
	return "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=worker"
}

// workerRunning reports whether a worker pod of the release runs (and so heartbeats itself), per the lister.
func workerRunning(pods corelisters.PodLister, namespace string, now time.Time) bool {
	list, err := pods.Pods(namespace).List(labels.Everything())
	if err != nil {
		return false
	}
	for _, p := range list {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		if podReady(p) || justStarted(p, now) {
			return true
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
