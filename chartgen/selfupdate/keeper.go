package selfupdate

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

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

// newLeaseKeeper reads the link from the chart ConfigMap and the worker's identity from its Secret, and makes the
// worker's LeaseKeeper (jobrunner: it acts as the worker). It returns
// nil (and no error) when the ConfigMap carries no link: the agent that started the upgrade had no
// operations' leases to keep, or predates lease keeping.
func newLeaseKeeper(ctx context.Context, kube kubernetes.Interface, cm *corev1.ConfigMap, release string, log logrus.FieldLogger) (*jobrunner.LeaseKeeper, error) {
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
	return &jobrunner.LeaseKeeper{
		Dispatcher: c, Kube: kube, Namespace: cm.Namespace, WorkerPods: workerPodSelector(release), Job: cm.Name,
		FromVersion: cm.Annotations[AnnotFromVersion], ToVersion: cm.Annotations[AnnotVersion],
		Capabilities: link.Capabilities, Log: log.WithField("worker", id.WorkerID),
	}, nil
}

func workerPodSelector(release string) string {
	return "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=worker"
}
