package jobrunner

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Config is what the agent needs to run operations as Jobs. The command that starts the agent builds it from
// the chart's values (chartgen.Values), the environment and flags; Validate checks it once before anything
// starts.
type Config struct {
	Namespace  string   // where Jobs, Secrets and the identity Secret live (the release namespace)
	WorkerName string   // the name the worker registers under
	Pools      []string // pools it takes operations from
	Version    string   // the worker's version, reported in heartbeats

	Concurrency       int           // operations run at once (capacity); the agent leases no more
	Capabilities      []string      // what it advertises; never "docker"
	HeartbeatInterval time.Duration // how often it heartbeats (and renews leases)
	LeaseWait         time.Duration // long-poll wait of one lease call (at most 30 s)
	SweepInterval     time.Duration // how often orphaned Jobs and Secrets are looked for
	IdentitySecret    string        // Secret holding the worker id and token across restarts
	Release           string        // the worker's own Helm release ("" outside one): its values check is reported

	WorkerImage      string // the worker's own image: the init container copies the runner out of it
	WorkerPullPolicy corev1.PullPolicy
	RunnerPath       string // the octo-worker binary inside WorkerImage
	ToolsImage       string // runs scripts of steps that name no image
	ToolsPullPolicy  corev1.PullPolicy

	Requests    corev1.ResourceList // requests of every script pod
	MaxRequests corev1.ResourceList // cap on a step's own requests; empty: steps cannot exceed Requests

	PendingTimeout  time.Duration // how long a pod may wait for capacity
	ImagePullGrace  time.Duration // how long image pull errors are tolerated
	TTLAfterFinish  time.Duration // ttlSecondsAfterFinished of every Job
	BackoffLimit    int32
	DefaultTimeout  time.Duration // activeDeadlineSeconds when an operation names no timeout (0: none)
	ServiceAccount  string        // script pods' ServiceAccount ("" = the namespace's default)
	AutomountToken  *bool         // automountServiceAccountToken of script pods (nil: Kubernetes' default)
	PodSecurity     *corev1.PodSecurityContext
	NodeSelector    map[string]string
	Tolerations     []corev1.Toleration
	Affinity        *corev1.Affinity
	ImagePullSecret []string
	Labels          map[string]string
	Annotations     map[string]string
}

// Defaults returns the agent's defaults (the chart's defaults say the same; see chartgen.Defaults).
func Defaults() Config {
	yes := true
	uid := int64(1000)
	return Config{
		Version:           "dev",
		Concurrency:       10,
		HeartbeatInterval: 15 * time.Second,
		LeaseWait:         30 * time.Second,
		SweepInterval:     time.Minute,
		IdentitySecret:    "octo-worker-identity",
		WorkerPullPolicy:  corev1.PullIfNotPresent,
		RunnerPath:        "/usr/local/bin/octo-worker",
		ToolsPullPolicy:   corev1.PullIfNotPresent,
		Requests:          corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		MaxRequests:       corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")},
		PendingTimeout:    15 * time.Minute,
		ImagePullGrace:    time.Minute,
		TTLAfterFinish:    10 * time.Minute,
		PodSecurity: &corev1.PodSecurityContext{
			RunAsNonRoot:   &yes,
			RunAsUser:      &uid,
			RunAsGroup:     &uid,
			FSGroup:        &uid,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// Validate reports every problem of c, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		bad("namespace", "%q is not a namespace name (%s): set OCTO_NAMESPACE or --namespace", c.Namespace, strings.Join(msgs, "; "))
	}
	if c.WorkerName == "" {
		bad("worker.name", "is empty: give the worker a name")
	}
	if len(c.Pools) == 0 {
		bad("worker.pools", "is empty: name at least one worker pool")
	}
	if c.Concurrency < 1 {
		bad("worker.concurrency", "is %d: must be at least 1", c.Concurrency)
	}
	for _, cap := range c.Capabilities {
		if cap == "docker" {
			bad("worker.capabilities", "\"docker\" cannot be advertised: script pods have no Docker daemon")
		}
	}
	if c.HeartbeatInterval <= 0 {
		bad("worker.heartbeatInterval", "must be positive")
	}
	if c.LeaseWait <= 0 || c.LeaseWait > 30*time.Second {
		bad("leaseWait", "is %v: must be between 1s and 30s", c.LeaseWait)
	}
	if c.SweepInterval <= 0 {
		bad("sweepInterval", "must be positive")
	}
	if msgs := validation.IsDNS1123Subdomain(c.IdentitySecret); len(msgs) > 0 {
		bad("identitySecret", "%q is not a Secret name: %s", c.IdentitySecret, strings.Join(msgs, "; "))
	}
	if c.WorkerImage == "" {
		bad("image.repository", "is empty: script pods copy the runner out of the worker image")
	}
	if c.ToolsImage == "" {
		bad("scriptPods.worker.image.repository", "is empty: name the worker-tools image that runs scripts")
	}
	if c.PendingTimeout <= 0 {
		bad("scriptPods.pendingTimeout", "must be positive")
	}
	if c.ImagePullGrace < 0 {
		bad("scriptPods.imagePullGrace", "must not be negative")
	}
	if c.TTLAfterFinish < 0 {
		bad("scriptPods.ttlSecondsAfterFinished", "must not be negative")
	}
	if c.BackoffLimit < 0 {
		bad("scriptPods.backoffLimit", "must not be negative")
	}
	for name, q := range c.MaxRequests {
		if r, ok := c.Requests[name]; ok && r.Cmp(q) > 0 {
			bad("scriptPods.resources.maxRequests."+string(name), "%s is below resources.requests.%s (%s): raise it or lower the request", q.String(), name, r.String())
		}
	}
	return errors.Join(errs...)
}
