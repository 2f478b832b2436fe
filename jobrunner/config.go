package jobrunner

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Config is what the agent needs to run operations as Jobs. ConfigFrom builds it from the chart's values
// (chartgen.Values: the one home of its defaults and rules, validated there) and where the agent runs (Env);
// Validate checks only what a caller building a Config by hand could get wrong.
type Config struct {
	Namespace  string   // where Jobs, Secrets and the identity Secret live (the release namespace)
	WorkerName string   // the name the worker registers under
	Pools      []string // pools it takes operations from
	Version    string   // the worker's version, reported in heartbeats

	Concurrency       int           // operations run at once (capacity); the agent leases no more
	Capabilities      []string      // what it advertises: BaseCapabilities and the chart's worker.capabilities
	HeartbeatInterval time.Duration // how often it heartbeats (and renews leases)
	CheckInterval     time.Duration // how often it runs its health checks (checks.go)
	SweepInterval     time.Duration // how often orphaned Jobs and Secrets are looked for
	IdentitySecret    string        // Secret holding the worker id and token across restarts
	Release           string        // the worker's own Helm release ("" outside one): its values check is reported

	WorkerImage      string // the worker's own image: the init container copies the runner out of it
	WorkerPullPolicy corev1.PullPolicy
	RunnerPath       string // the octo-worker binary inside WorkerImage
	ToolsImage       string // runs scripts of steps that name no image
	ToolsPullPolicy  corev1.PullPolicy
	DispatchURL      string // the dispatch server as script pods reach it (their own channel)

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
	LogLimit        int64 // bytes of log the server keeps of each operation (sent with every lease long-poll)
	// Profiles are the pod profiles steps may name (chartgen.Profile: how one combines with the fields above)
	// and AllowOverrides what a step may change beyond them; both are advertised.
	Profiles       map[string]chartgen.Profile
	AllowOverrides *api.OverridePolicy
}

// BaseCapabilities are what every octo-worker offers: it runs steps as Kubernetes Jobs, in a step's own image
// when it names one. Never "docker" (chartgen refuses it in worker.capabilities).
var BaseCapabilities = []string{"kubernetes-job", "custom-image"}

// RunnerPath is where the worker image holds the octo-worker binary that script pods copy.
const RunnerPath = "/usr/local/bin/octo-worker"

// sweepInterval is how often the agent looks for orphaned Jobs and Secrets.
const sweepInterval = time.Minute

// Env is what the agent learns from where it runs rather than from the chart's values.
type Env struct {
	Namespace string // the release namespace (OCTO_NAMESPACE)
	Release   string // the worker's Helm release (OCTO_RELEASE_NAME): names the identity Secret
	PodName   string // the worker's own pod: its name when neither the values nor a release give one
	Version   string // the worker's version: reported in heartbeats, and the image tag the values leave empty
}

// ConfigFrom is the one conversion of the chart's values (validated by chartgen) into the agent's
// configuration. Its error names the environment variable or value at fault.
func ConfigFrom(v chartgen.Values, env Env) (Config, error) {
	c := Config{
		Namespace: env.Namespace, Version: env.Version, Release: env.Release,
		WorkerName:        firstNonEmpty(v.Worker.Name, env.Release, env.PodName),
		Pools:             v.Worker.Pools,
		Concurrency:       v.Worker.Concurrency,
		Capabilities:      append(slices.Clone(BaseCapabilities), v.Worker.Capabilities...),
		HeartbeatInterval: v.Worker.HeartbeatInterval.D(),
		CheckInterval:     v.Worker.HealthCheckInterval.D(),
		SweepInterval:     sweepInterval,
		IdentitySecret:    IdentitySecretName(firstNonEmpty(env.Release, v.Worker.Name, env.PodName)),
		WorkerImage:       v.Image.Ref(env.Version),
		WorkerPullPolicy:  corev1.PullPolicy(v.Image.PullPolicy),
		RunnerPath:        RunnerPath,
		ToolsImage:        v.ScriptPods.Worker.Image.Ref(env.Version),
		ToolsPullPolicy:   corev1.PullPolicy(v.ScriptPods.Worker.Image.PullPolicy),
		DispatchURL:       firstNonEmpty(v.ScriptPods.DispatchURL, v.Worker.ServerURL),
		Requests:          resourceList(v.ScriptPods.Resources.Requests),
		MaxRequests:       resourceList(v.ScriptPods.Resources.MaxRequests),
		PendingTimeout:    v.ScriptPods.PendingTimeout.D(),
		ImagePullGrace:    v.ScriptPods.ImagePullGrace.D(),
		TTLAfterFinish:    time.Duration(v.ScriptPods.TTLSecondsAfterFinished) * time.Second,
		BackoffLimit:      int32(v.ScriptPods.BackoffLimit),
		DefaultTimeout:    v.ScriptPods.DefaultTimeout.D(),
		ServiceAccount:    v.ScriptPods.ServiceAccount.Name,
		PodSecurity:       v.ScriptPods.PodSecurityContext,
		NodeSelector:      v.ScriptPods.NodeSelector,
		Tolerations:       v.ScriptPods.Tolerations,
		Affinity:          v.ScriptPods.Affinity,
		Labels:            v.ScriptPods.Labels,
		Annotations:       v.ScriptPods.Annotations,
		LogLimit:          v.ScriptPods.LogLimitBytes(),
		Profiles:          v.ScriptPods.Profiles,
		AllowOverrides:    v.ScriptPods.AllowOverrides.Policy(),
	}
	grants := len(v.ScriptPods.ServiceAccount.Rules) > 0 || v.ScriptPods.ServiceAccount.ClusterRole != ""
	c.AutomountToken = &grants
	for _, s := range v.ScriptPods.ImagePullSecrets {
		c.ImagePullSecret = append(c.ImagePullSecret, s.Name)
	}
	if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		return c, fmt.Errorf("namespace: %q is not a namespace name (%s): set OCTO_NAMESPACE or --namespace", c.Namespace, strings.Join(msgs, "; "))
	}
	return c, c.Validate()
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// resourceList turns validated chart quantities into a ResourceList (unset ones left out).
func resourceList(q chartgen.Quantities) corev1.ResourceList {
	out := corev1.ResourceList{}
	for name, s := range map[corev1.ResourceName]chartgen.Quantity{corev1.ResourceCPU: q.CPU, corev1.ResourceMemory: q.Memory} {
		if v, err := resource.ParseQuantity(string(s)); s != "" && err == nil {
			out[name] = v
		}
	}
	return out
}

// Validate reports what a Config built by hand could lack: the chart's rules (quantities, caps, capabilities)
// are chartgen's and were checked there.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Namespace == "" {
		bad("Namespace", "is empty")
	}
	if c.WorkerName == "" {
		bad("WorkerName", "is empty: give the worker a name")
	}
	if len(c.Pools) == 0 {
		bad("Pools", "is empty")
	}
	if c.Concurrency < 1 {
		bad("Concurrency", "is %d: must be at least 1", c.Concurrency)
	}
	if c.HeartbeatInterval <= 0 || c.CheckInterval <= 0 || c.SweepInterval <= 0 || c.PendingTimeout <= 0 {
		bad("HeartbeatInterval, CheckInterval, SweepInterval, PendingTimeout", "must be positive")
	}
	if c.ImagePullGrace < 0 || c.TTLAfterFinish < 0 || c.BackoffLimit < 0 || c.DefaultTimeout < 0 {
		bad("ImagePullGrace, TTLAfterFinish, BackoffLimit, DefaultTimeout", "must not be negative")
	}
	if c.IdentitySecret == "" || c.WorkerImage == "" || c.ToolsImage == "" || c.RunnerPath == "" {
		bad("IdentitySecret, WorkerImage, ToolsImage, RunnerPath", "must be set")
	}
	return errors.Join(errs...)
}
