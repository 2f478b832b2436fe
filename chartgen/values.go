// Package chartgen is the Helm chart's generator and guard: one Go type (Values) describes every chart value
// (name, default, documentation, constraints); values.yaml, values.schema.json and the chart README's values
// table are generated from it, the worker agent reads its configuration into it, and chartgen validates,
// renders and installs the embedded chart with the Helm SDK.
//
// How a field is described: its JSON tag is the value's name; `doc` is its documentation; constraints are
// the tags `enum` (comma-separated), `min`/`max` (numbers), `minItems`, `unique` ("true": no repeated items),
// `pattern` (a regular expression the string must match when it is not empty) with `hint` (what a matching
// value looks like, for messages), `format` (duration, uri, image-repository, image-tag, dns-label,
// dns-subdomain, cpu, memory, label-key, label-value), `keys` and `values` (the formats of a map's keys and
// values), `required` ("true": the value must be set, it has no usable default), `kind` ("object" or
// "objects": a Kubernetes type the schema leaves open but for the fields rules.go constrains, and Validate
// decodes strictly) and `sensitive` ("true": kept out of the worker's ConfigMap and printed masked). Defaults
// come from Defaults; rules that span fields are in Validate, and those a schema can say too in rules.go.
package chartgen

import (
	corev1 "k8s.io/api/core/v1"
)

// Values is the chart's configuration, and the worker agent's: the chart renders its effective values into a
// ConfigMap the agent reads with --values.
type Values struct {
	Worker             Worker                     `json:"worker" doc:"How the worker agent connects to the dispatch server and how much it runs at once."`
	Image              Image                      `json:"image" doc:"The worker's own image. It runs the agent, and script pods copy the runner out of it in an init container, so the worker and runner versions always match."`
	ImagePullSecrets   []LocalObjectReference     `json:"imagePullSecrets" doc:"Secrets (by name, in the release namespace) for pulling the worker image."`
	ServiceAccount     ServiceAccount             `json:"serviceAccount" doc:"The worker's own ServiceAccount. Its Role is confined to the release namespace."`
	SelfUpdate         SelfUpdate                 `json:"selfUpdate" doc:"Self-update: when the dispatch server asks for another version, the worker drains and upgrades its own Helm release."`
	Resources          ResourceRequirements       `json:"resources" doc:"Requests and limits of the worker container (the agent only; operations run in their own pods)."`
	NodeSelector       map[string]string          `json:"nodeSelector" keys:"label-key" values:"label-value" doc:"Node labels the worker pod must match."`
	Tolerations        []corev1.Toleration        `json:"tolerations" kind:"objects" doc:"Tolerations of the worker pod (Kubernetes Toleration objects)."`
	Affinity           *corev1.Affinity           `json:"affinity" kind:"object" doc:"Affinity of the worker pod (a Kubernetes Affinity object)."`
	PodSecurityContext *corev1.PodSecurityContext `json:"podSecurityContext" kind:"object" doc:"Security context of the worker pod. The default passes Pod Security 'restricted'."`
	SecurityContext    *corev1.SecurityContext    `json:"securityContext" kind:"object" doc:"Security context of the worker container. The default passes Pod Security 'restricted'."`
	PodLabels          map[string]string          `json:"podLabels" keys:"label-key" values:"label-value" doc:"Extra labels on the worker pod."`
	PodAnnotations     map[string]string          `json:"podAnnotations" keys:"label-key" doc:"Extra annotations on the worker pod."`
	ScriptPods         ScriptPods                 `json:"scriptPods" doc:"The pods that run operations: one batch/v1 Job per deployment step."`
	Metrics            Metrics                    `json:"metrics" doc:"How Prometheus finds the worker's /metrics (on worker.healthPort)."`
}

// Worker configures the agent itself.
type Worker struct {
	ServerURL               string            `json:"serverUrl" required:"true" format:"uri" doc:"Absolute http(s) URL of the dispatch server, e.g. https://deploy.example.com."`
	Name                    string            `json:"name" format:"dns-subdomain" doc:"Name the worker registers under. Empty: the Helm release name."`
	Pools                   []string          `json:"pools" unique:"true" required:"true" minItems:"1" format:"dns-label" doc:"Worker pools this worker takes operations from (one or more)."`
	RegistrationToken       string            `json:"registrationToken" sensitive:"true" doc:"Pool-scoped registration token from the dispatch server. Stored in a Secret the chart creates. Leave empty when registrationTokenSecret.name is set."`
	RegistrationTokenSecret SecretKeyRef      `json:"registrationTokenSecret" doc:"An existing Secret holding the registration token (instead of registrationToken)."`
	Concurrency             int               `json:"concurrency" min:"1" max:"1000" doc:"Operations this worker runs at once (its capacity). Each runs as its own Job, so this bounds the pods it creates, not its own CPU."`
	HeartbeatInterval       Duration          `json:"heartbeatInterval" format:"duration" min:"1s" max:"5m" doc:"How often the worker reports health and renews its leases."`
	HealthCheckInterval     Duration          `json:"healthCheckInterval" format:"duration" min:"1s" max:"1h" doc:"How often the worker checks what it needs: the Kubernetes API answers, its informers are synced, its Role grants what it uses, and a script pod passes admission (Pod Security, quotas, webhooks; a server-side dry run). Each heartbeat reports the last round."`
	Capabilities            []string          `json:"capabilities" unique:"true" format:"dns-label" doc:"Extra capabilities the worker advertises (operations may require them). Never 'docker': script pods have no Docker daemon."`
	HealthPort              int               `json:"healthPort" min:"1024" max:"65535" doc:"Port of the agent's /healthz and /readyz endpoints (probes)."`
	LogLevel                string            `json:"logLevel" enum:"debug,info,warn,error" doc:"The agent's log level."`
	Probes                  WorkerProbes      `json:"probes" doc:"Liveness and readiness probe timing of the worker container."`
	ExtraEnv                map[string]string `json:"extraEnv" doc:"Extra environment variables for the worker container."`
}

// WorkerProbes tunes the worker container's probes.
type WorkerProbes struct {
	PeriodSeconds    int `json:"periodSeconds" min:"1" max:"300" doc:"Seconds between probes."`
	FailureThreshold int `json:"failureThreshold" min:"1" max:"30" doc:"Failed liveness probes in a row before the container restarts."`
}

// SecretKeyRef names a key of an existing Secret in the release namespace.
type SecretKeyRef struct {
	Name string `json:"name" format:"dns-subdomain" doc:"Name of the Secret. Empty: use registrationToken."`
	Key  string `json:"key" pattern:"^[-._a-zA-Z0-9]+$" hint:"is not a Secret key: letters, digits, '-', '_' and '.'" doc:"Key in the Secret that holds the token."`
}

// LocalObjectReference names an object in the release namespace.
type LocalObjectReference struct {
	Name string `json:"name" required:"true" format:"dns-subdomain" doc:"Name of the object."`
}

// Image is a container image reference split the way Helm charts usually split it.
type Image struct {
	Repository string `json:"repository" required:"true" format:"image-repository" doc:"Image repository, e.g. ghcr.io/octo-worker/octo-worker."`
	Tag        string `json:"tag" format:"image-tag" doc:"Image tag, or a digest (sha256:...). Empty: the chart's appVersion."`
	PullPolicy string `json:"pullPolicy" enum:"Always,IfNotPresent,Never" doc:"Kubernetes imagePullPolicy."`
}

// ServiceAccount is the worker's own ServiceAccount.
type ServiceAccount struct {
	Create      bool              `json:"create" doc:"Create the ServiceAccount, its Role and RoleBinding. When false, name must be an existing ServiceAccount with the same permissions."`
	Name        string            `json:"name" format:"dns-subdomain" doc:"Name of the ServiceAccount. Empty: the release's full name."`
	Annotations map[string]string `json:"annotations" keys:"label-key" doc:"Annotations on the ServiceAccount."`
}

// SelfUpdate configures upgrades of the worker's own release.
type SelfUpdate struct {
	Enabled bool     `json:"enabled" doc:"Upgrade the release when the dispatch server asks for another version. When false the worker reports the mismatch and keeps running."`
	Timeout Duration `json:"timeout" format:"duration" min:"1m" max:"1h" doc:"How long the upgrade may take (new worker ready) before it is rolled back."`
}

// ResourceRequirements are a container's requests and limits.
type ResourceRequirements struct {
	Requests Quantities `json:"requests" doc:"Resources the scheduler reserves."`
	Limits   Quantities `json:"limits" doc:"Resources the container may not exceed. Empty: no limit."`
}

// Quantities are Kubernetes resource quantities ("250m", "512Mi"; numbers too, as in Kubernetes). Empty means
// unset.
type Quantities struct {
	CPU    Quantity `json:"cpu" format:"cpu" doc:"CPU, e.g. 250m, 0.5 or 2."`
	Memory Quantity `json:"memory" format:"memory" doc:"Memory, e.g. 512Mi or 2Gi (in bytes: m means thousandths, so 512m is half a byte)."`
}

// ScriptPods configures the Jobs and pods that run operations.
type ScriptPods struct {
	Worker                  ScriptContainer            `json:"worker" doc:"The container that runs each operation's script (unless a step names its own image)."`
	Resources               ScriptResources            `json:"resources" doc:"Resources of script pods."`
	PendingTimeout          Duration                   `json:"pendingTimeout" format:"duration" min:"10s" max:"24h" doc:"How long an operation may wait for capacity (pod unschedulable; cluster autoscalers take minutes to add a node) before it fails. Meanwhile it is reported as waiting for capacity with the scheduler's message."`
	ImagePullGrace          Duration                   `json:"imagePullGrace" format:"duration" min:"0s" max:"30m" doc:"How long image pull errors are tolerated before the operation fails naming the image and the reason. Invalid image names fail at once."`
	TTLSecondsAfterFinished int                        `json:"ttlSecondsAfterFinished" min:"0" max:"604800" doc:"Seconds a finished Job (and its pod) is kept before Kubernetes deletes it."`
	DefaultTimeout          Duration                   `json:"defaultTimeout" format:"duration" min:"0s" max:"168h" doc:"How long an operation that names no timeout may run (its Job's activeDeadlineSeconds). 0: no limit."`
	BackoffLimit            int                        `json:"backoffLimit" min:"0" max:"10" doc:"Retries of a failed script pod. 0: a deployment step runs at most once; scripts are rarely safe to re-run."`
	NodeSelector            map[string]string          `json:"nodeSelector" keys:"label-key" values:"label-value" doc:"Node labels script pods must match."`
	Tolerations             []corev1.Toleration        `json:"tolerations" kind:"objects" doc:"Tolerations of script pods (Kubernetes Toleration objects)."`
	Affinity                *corev1.Affinity           `json:"affinity" kind:"object" doc:"Affinity of script pods (a Kubernetes Affinity object)."`
	ImagePullSecrets        []LocalObjectReference     `json:"imagePullSecrets" doc:"Secrets for pulling script images (the worker-tools image and step images)."`
	Labels                  map[string]string          `json:"labels" keys:"label-key" values:"label-value" doc:"Extra labels on script Jobs and pods."`
	Annotations             map[string]string          `json:"annotations" keys:"label-key" doc:"Extra annotations on script Jobs and pods."`
	PodSecurityContext      *corev1.PodSecurityContext `json:"podSecurityContext" kind:"object" doc:"Security context of script pods. The default passes Pod Security 'restricted' (non-root user 1000); containers always drop all capabilities and disallow privilege escalation."`
	ServiceAccount          ScriptServiceAccount       `json:"serviceAccount" doc:"Kubernetes API permissions of the scripts, separate from the worker's own."`
	DispatchURL             string                     `json:"dispatchURL" format:"uri" doc:"Absolute http(s) URL at which script pods reach the dispatch server themselves, with a token good for their one operation only: they push the log lines the kubelet can no longer serve (rotated away while the worker was restarting or the server away). Empty: worker.serverUrl."`
	LogLimit                Quantity                   `json:"logLimit" format:"memory" doc:"The most log the dispatch server keeps of one operation, 1Mi..10Gi (a line counts as its text plus about 35 bytes of seq, time and stream). Past it the server keeps the first half and the latest part, drops the middle and leaves one line there saying how many lines and bytes it dropped; the result and exit code are unchanged. Empty: 100Mi. There is no unlimited."`
	WarmPool                WarmPool                   `json:"warmPool" doc:"Warm capacity: placeholder pods at a negative priority that keep room for script pods where script pods are scheduled, so new operations start without waiting for a node. Script pods (priority 0) preempt them; the replacements wait for room, which makes a cluster autoscaler add a node ahead of demand."`
	Profiles                map[string]Profile         `json:"profiles" keys:"dns-label" doc:"Named pod settings a step may choose (submit --profile NAME), on top of those above; see Pod profiles."`
	AllowOverrides          AllowOverrides             `json:"allowOverrides" doc:"What a step may override beyond its profile; the rest is refused at submit."`
}

// WarmPool configures the placeholder pods that keep room for script pods.
type WarmPool struct {
	Enabled             bool       `json:"enabled" doc:"Run the placeholder Deployment. It costs the resources it holds, all the time."`
	Replicas            int        `json:"replicas" min:"1" max:"100" doc:"Placeholder pods: the number of script pods that find room without waiting."`
	Resources           Quantities `json:"resources" doc:"Requests of each placeholder pod. Empty: scriptPods.resources.requests (per resource), so each placeholder keeps room for one script pod."`
	PriorityClassName   string     `json:"priorityClassName" format:"dns-subdomain" doc:"PriorityClass of the placeholders; its value must be below the script pods' (0 unless a globalDefault class says otherwise). Empty with createPriorityClass: the chart's name, NAMESPACE-FULLNAME-warm-pool. Required otherwise."`
	CreatePriorityClass bool       `json:"createPriorityClass" doc:"Create the PriorityClass (value -10, never preempting). It is cluster-scoped: installing it needs create on priorityclasses.scheduling.k8s.io (cluster admin). When false, priorityClassName must exist."`
}

// ScriptContainer is the image that runs scripts.
type ScriptContainer struct {
	Image Image `json:"image" form:"reference" doc:"The worker-tools image: the tools deployment scripts use (shells, kubectl, helm, cloud CLIs). Either repository, tag and pullPolicy, or one image reference with a tag or digest (debian:bookworm)."`
}

// ScriptResources are the requests of script pods and the cap on a step's own requests.
type ScriptResources struct {
	Requests    Quantities `json:"requests" doc:"Requests of every script pod: what the scheduler and the cluster autoscaler see. Too low: pods pack onto few nodes and starve each other, and the autoscaler adds nodes too late. Too high: pods wait for capacity, and the autoscaler adds nodes that sit mostly idle. 'octo-worker requests advise' recommends them from the usage operations measured."`
	MaxRequests Quantities `json:"maxRequests" doc:"The most a single step may request for itself; larger step requests are capped to this. Empty: steps cannot raise requests above resources.requests."`
}

// ScriptServiceAccount is the ServiceAccount script pods run as, and its permissions.
type ScriptServiceAccount struct {
	Create           bool              `json:"create" doc:"Create the script ServiceAccount and the Roles/bindings below. When false, name must be an existing ServiceAccount."`
	Name             string            `json:"name" format:"dns-subdomain" doc:"Name of the ServiceAccount. Empty: the release's full name plus -scripts."`
	Annotations      map[string]string `json:"annotations" keys:"label-key" doc:"Annotations on the ServiceAccount (e.g. cloud workload identity)."`
	Rules            []PolicyRule      `json:"rules" doc:"RBAC rules granted to scripts: in the release namespace, or in each of targetNamespaces when set. Empty: no Kubernetes API access (the token is not mounted unless clusterRole is set)."`
	TargetNamespaces []string          `json:"targetNamespaces" unique:"true" format:"dns-label" doc:"Namespaces where rules (and clusterRole, if set) are granted instead of the release namespace. Each gets a Role and RoleBinding; the namespaces must exist."`
	ClusterRole      string            `json:"clusterRole" format:"dns-subdomain" doc:"An existing ClusterRole to grant scripts: cluster-wide (ClusterRoleBinding) when targetNamespaces is empty, otherwise in each target namespace."`
}

// PolicyRule is one RBAC rule (the Kubernetes PolicyRule, namespaced resources only).
type PolicyRule struct {
	APIGroups     []string `json:"apiGroups" required:"true" minItems:"1" doc:"API groups; \"\" is the core group, \"*\" all groups."`
	Resources     []string `json:"resources" required:"true" minItems:"1" pattern:"^(\\*|[a-z0-9][a-z0-9.-]*(/[a-z0-9]+)?)$" hint:"is not a resource: write the lowercase plural (deployments, pods/log) or \"*\"" doc:"Resources (plural, lowercase), optionally with a subresource (pods/log), or \"*\"."`
	Verbs         []string `json:"verbs" required:"true" minItems:"1" enum:"get,list,watch,create,update,patch,delete,deletecollection,*" doc:"Verbs allowed."`
	ResourceNames []string `json:"resourceNames,omitempty" doc:"Restrict the rule to these object names."`
}

// Metrics says how Prometheus finds the worker's /metrics.
type Metrics struct {
	ScrapeAnnotations bool    `json:"scrapeAnnotations" doc:"Annotate the worker pod with prometheus.io/scrape, port and path."`
	PodMonitor        Monitor `json:"podMonitor" doc:"A PodMonitor (Prometheus Operator) of the worker pod."`
	ServiceMonitor    Monitor `json:"serviceMonitor" doc:"A ServiceMonitor (Prometheus Operator) and a Service for it."`
}

// Monitor is a Prometheus Operator monitor of the worker.
type Monitor struct {
	Enabled bool              `json:"enabled" doc:"Create it."`
	Labels  map[string]string `json:"labels" keys:"label-key" values:"label-value" doc:"Extra labels, e.g. what your Prometheus selects (release: prometheus)."`
}

// DefaultImageRepository is the worker image's repository unless image.repository says otherwise.
const DefaultImageRepository = "ghcr.io/octo-worker/octo-worker"

// Defaults returns the chart's default values. values.yaml is generated from it.
func Defaults() Values {
	yes, no := true, false
	uid, gid := int64(1000), int64(1000)
	return Values{
		Worker: Worker{
			Pools:                   []string{},
			RegistrationTokenSecret: SecretKeyRef{Key: "token"},
			Concurrency:             10,
			HeartbeatInterval:       Seconds(15),
			HealthCheckInterval:     Seconds(60),
			Capabilities:            []string{},
			HealthPort:              8081,
			LogLevel:                "info",
			Probes:                  WorkerProbes{PeriodSeconds: 10, FailureThreshold: 6},
			ExtraEnv:                map[string]string{},
		},
		Image:            Image{Repository: DefaultImageRepository, PullPolicy: "IfNotPresent"},
		ImagePullSecrets: []LocalObjectReference{},
		ServiceAccount:   ServiceAccount{Create: true, Annotations: map[string]string{}},
		SelfUpdate:       SelfUpdate{Enabled: true, Timeout: Seconds(10 * 60)},
		Resources: ResourceRequirements{
			Requests: Quantities{CPU: "50m", Memory: "64Mi"},
			Limits:   Quantities{Memory: "256Mi"},
		},
		NodeSelector: map[string]string{},
		Tolerations:  []corev1.Toleration{},
		PodSecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   &yes,
			RunAsUser:      &uid,
			RunAsGroup:     &gid,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &no,
			ReadOnlyRootFilesystem:   &yes,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		PodLabels:      map[string]string{},
		PodAnnotations: map[string]string{},
		ScriptPods: ScriptPods{
			Worker: ScriptContainer{Image: Image{Repository: "ghcr.io/octo-worker/worker-tools", PullPolicy: "IfNotPresent"}},
			Resources: ScriptResources{
				Requests:    Quantities{CPU: "250m", Memory: "256Mi"},
				MaxRequests: Quantities{CPU: "2", Memory: "4Gi"},
			},
			LogLimit:                "100Mi",
			PendingTimeout:          Seconds(15 * 60),
			ImagePullGrace:          Seconds(60),
			TTLSecondsAfterFinished: 600,
			BackoffLimit:            0,
			NodeSelector:            map[string]string{},
			Tolerations:             []corev1.Toleration{},
			ImagePullSecrets:        []LocalObjectReference{},
			Labels:                  map[string]string{},
			Annotations:             map[string]string{},
			PodSecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &yes,
				RunAsUser:      &uid,
				RunAsGroup:     &gid,
				FSGroup:        &gid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			ServiceAccount: ScriptServiceAccount{
				Create:           true,
				Annotations:      map[string]string{},
				Rules:            []PolicyRule{},
				TargetNamespaces: []string{},
			},
			WarmPool:       WarmPool{Replicas: 1},
			Profiles:       map[string]Profile{},
			AllowOverrides: AllowOverrides{NodeSelector: map[string]string{}, Tolerations: []AllowedToleration{}},
		},
		Metrics: Metrics{PodMonitor: Monitor{Labels: map[string]string{}}, ServiceMonitor: Monitor{Labels: map[string]string{}}},
	}
}
