package jobrunner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
	"github.com/octo-worker/octo-worker/jobrunner/podrunner"
)

// Labels and annotations on every Job, pod and Secret the agent creates. The informer selects on
// LabelManagedBy and LabelWorker; the annotation holds the full operation id (label values are limited).
const (
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	ManagedByValue      = "octo-worker"
	LabelOperation      = "octo-worker.io/operation"
	LabelWorker         = "octo-worker.io/worker"
	LabelPool           = "octo-worker.io/pool"
	AnnotationOperation = "octo-worker.io/operation-id"
	AnnotationLease     = "octo-worker.io/lease-id"
)

// Names inside the script pod.
const (
	InitContainerName   = "install-runner"
	ScriptContainerName = "script"
)

// MaxSecretBytes is the largest operation (script, files and variables, as the runner's JSON spec) that fits
// in its Secret: Kubernetes caps a Secret at 1 MiB, less room for metadata.
const MaxSecretBytes = 1000 * 1000

// JobName is the name of the Job (and Secret) of an operation: a DNS label derived from its id, with a hash so
// that ids differing only in characters a name cannot hold do not collide.
func JobName(operationID string) string {
	sum := sha256.Sum256([]byte(operationID))
	b := []byte(strings.ToLower(operationID))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	if s := strings.Trim(string(b), "-"); s != "" {
		return "octo-" + s + "-" + hex.EncodeToString(sum[:4])
	}
	return "octo-" + hex.EncodeToString(sum[:4])
}

// WorkerSelector selects everything worker workerID creates for its operations: Jobs, their pods, Secrets.
func WorkerSelector(workerID string) labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue, LabelWorker: LabelValue(workerID)})
}

// LabelValue turns an id into a valid label value.
func LabelValue(id string) string { return sanitize(id, 63) }

func sanitize(s string, max int) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
		if !ok {
			b[i] = '-'
		}
	}
	if len(b) > max {
		b = b[:max]
	}
	return strings.Trim(string(b), "-._")
}

// operationLabels are the labels on an operation's Job, pod and Secret.
func (c *Config) operationLabels(workerID string, op *api.Operation) map[string]string {
	l := make(map[string]string, len(c.Labels)+4)
	for k, v := range c.Labels {
		l[k] = v
	}
	for k, v := range c.Profiles[op.Profile].Labels {
		l[k] = v
	}
	l[LabelManagedBy] = ManagedByValue
	l[LabelWorker] = LabelValue(workerID)
	l[LabelOperation] = LabelValue(op.ID)
	l[LabelPool] = LabelValue(op.Pool)
	return l
}

func (c *Config) operationAnnotations(lease *api.Lease) map[string]string {
	a := make(map[string]string, len(c.Annotations)+2)
	for k, v := range c.Annotations {
		a[k] = v
	}
	for k, v := range c.Profiles[lease.Operation.Profile].Annotations {
		a[k] = v
	}
	a[AnnotationOperation] = lease.Operation.ID
	a[AnnotationLease] = lease.LeaseID
	return a
}

// BuildSecret returns the Secret that carries an operation's script, files, variables and sealing key to its
// pod, and the lease's pod token with the server's URL when the lease has one (the pod's own channel). It is
// created before the Job and then owned by it.
func (c *Config) BuildSecret(workerID string, lease *api.Lease, key []byte) (*corev1.Secret, error) {
	op := &lease.Operation
	rs := podrunner.Spec{
		OperationID: op.ID,
		Syntax:      op.Syntax,
		Script:      op.Script,
		Files:       op.Files,
		Variables:   op.Variables,
		Packages:    op.ResolvedPackages,
	}
	data := map[string][]byte{podrunner.SealingKeyKey: key}
	if lease.PodToken != "" && c.BackoffLimit == 0 { // a retried pod would number its lines from 1 again
		rs.DispatchURL = c.DispatchURL
		data[podrunner.PodTokenKey] = []byte(lease.PodToken)
	}
	spec, err := json.Marshal(rs)
	if err != nil {
		return nil, fmt.Errorf("encoding runner spec: %w", err)
	}
	if len(spec) > MaxSecretBytes {
		return nil, fmt.Errorf("the operation's script, files and variables take %d bytes, more than a Kubernetes Secret holds (%d): move large files into a package or the image", len(spec), MaxSecretBytes)
	}
	data[podrunner.SpecKey] = spec
	if _, err := podrunner.Shell(op.Syntax, "script"); err != nil {
		return nil, fmt.Errorf("syntax: %w", err)
	}
	for i, f := range op.Files {
		if err := podrunner.CheckFilePath(f.Path); err != nil {
			return nil, fmt.Errorf("files[%d].path: %w", i, err)
		}
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        JobName(op.ID),
			Namespace:   c.Namespace,
			Labels:      c.operationLabels(workerID, op),
			Annotations: c.operationAnnotations(lease),
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: ptr(true),
		Data:      data,
	}, nil
}

// Requests returns the script pod's requests for an operation: its own requests capped by MaxRequests (or by
// the base request when no maximum is set or the base is higher) and by its profile's limits, else the base requests: the
// configured Requests, each replaced by its profile's. Notes say what was capped, for the log. It refuses an
// operation whose profile or overrides this worker does not offer or allow (profileOf).
func (c *Config) RequestsFor(op *api.Operation) (corev1.ResourceList, []string, error) {
	profile, err := c.profileOf(op)
	if err != nil {
		return nil, nil, err
	}
	out := c.Requests.DeepCopy()
	if out == nil {
		out = corev1.ResourceList{}
	}
	var limits corev1.ResourceList
	if r := profile.Resources; r != nil {
		maps.Copy(out, r.Requests)
		limits = r.Limits
	}
	if op.Requests == nil {
		return out, nil, nil
	}
	var notes []string
	for _, r := range []struct {
		name  corev1.ResourceName
		value string
	}{{corev1.ResourceCPU, op.Requests.CPU}, {corev1.ResourceMemory, op.Requests.Memory}} {
		if r.value == "" {
			continue
		}
		q, err := resource.ParseQuantity(r.value)
		if err != nil || q.Sign() <= 0 {
			return nil, nil, fmt.Errorf("requests.%s: %q is not a positive Kubernetes quantity (e.g. 500m or 1Gi)", r.name, r.value)
		}
		limit, ok := c.MaxRequests[r.name]
		if base, set := out[r.name]; !ok || set && base.Cmp(limit) > 0 {
			limit, ok = base, set // a profile that asks for more than the maximum raises it to its own request
		}
		if ok && q.Cmp(limit) > 0 {
			notes = append(notes, fmt.Sprintf("requested %s %s is above this worker's maximum; using %s", r.name, q.String(), limit.String()))
			q = limit
		}
		if lim, ok := limits[r.name]; ok && q.Cmp(lim) > 0 {
			notes = append(notes, fmt.Sprintf("requested %s %s is above the limit of profile %s; using %s", r.name, q.String(), op.Profile, lim.String()))
			q = lim
		}
		out[r.name] = q
	}
	return out, notes, nil
}

// BuildJob returns the Job that runs an operation. secretName is the Secret from BuildSecret.
func (c *Config) BuildJob(workerID string, lease *api.Lease, requests corev1.ResourceList) *batchv1.Job {
	op := &lease.Operation
	labels := c.operationLabels(workerID, op)
	annotations := c.operationAnnotations(lease)
	image, pull := c.ToolsImage, c.ToolsPullPolicy
	if op.Image != "" {
		image = op.Image
	}
	var deadline *int64
	if op.TimeoutSeconds > 0 {
		deadline = ptr(int64(op.TimeoutSeconds))
	} else if c.DefaultTimeout > 0 {
		deadline = ptr(int64(c.DefaultTimeout.Seconds()))
	}
	var pullSecrets []corev1.LocalObjectReference
	for _, s := range c.ImagePullSecret {
		pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: s})
	}
	restricted := func() *corev1.SecurityContext {
		return &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			RunAsNonRoot:             ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
	}
	name := JobName(op.ID)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: labels, Annotations: annotations},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr(c.BackoffLimit),
			TTLSecondsAfterFinished: ptr(int32(c.TTLAfterFinish.Seconds())),
			ActiveDeadlineSeconds:   deadline,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           c.ServiceAccount,
					AutomountServiceAccountToken: c.AutomountToken,
					SecurityContext:              c.PodSecurity.DeepCopy(),
					NodeSelector:                 c.NodeSelector,
					Tolerations:                  c.Tolerations,
					Affinity:                     c.Affinity.DeepCopy(),
					ImagePullSecrets:             pullSecrets,
					EnableServiceLinks:           ptr(false),
					InitContainers: []corev1.Container{{
						Name:            InitContainerName,
						Image:           c.WorkerImage,
						ImagePullPolicy: c.WorkerPullPolicy,
						Command:         []string{c.RunnerPath, "runner", "install", podrunner.BinDir + "/octo-worker"},
						SecurityContext: restricted(),
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi"),
						}},
						VolumeMounts: []corev1.VolumeMount{{Name: "octo-bin", MountPath: podrunner.BinDir}},
					}},
					Containers: []corev1.Container{{
						Name:            ScriptContainerName,
						Image:           image,
						ImagePullPolicy: pull,
						Command: []string{podrunner.BinDir + "/octo-worker", "runner", "run",
							"--spec", podrunner.OperationDir + "/" + podrunner.SpecKey, "--key", podrunner.OperationDir + "/" + podrunner.SealingKeyKey, "--workdir", podrunner.WorkDir},
						WorkingDir:      podrunner.WorkDir,
						Env:             []corev1.EnvVar{{Name: "HOME", Value: podrunner.WorkDir}},
						SecurityContext: restricted(),
						Resources:       corev1.ResourceRequirements{Requests: requests},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "octo-bin", MountPath: podrunner.BinDir, ReadOnly: true},
							{Name: "octo-operation", MountPath: podrunner.OperationDir, ReadOnly: true},
							{Name: "octo-work", MountPath: podrunner.WorkDir},
							{Name: "octo-spool", MountPath: podrunner.SpoolDir},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "octo-bin", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
						{Name: "octo-work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
						// 0444: the pod's only processes are the runner and the script, which must read it whatever
						// user the image runs as; the files live in the pod's own tmpfs.
						{Name: "octo-operation", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name, DefaultMode: ptr(int32(0o444))}}},
						{Name: "octo-spool", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
				},
			},
		},
	}
	applyProfile(&job.Spec.Template.Spec, c.Profiles[op.Profile], op.Overrides)
	return job
}

// OwnedBy returns the owner reference that makes a Secret garbage-collected with its Job. It is not a
// controller reference: no controller manages operation Secrets.
func OwnedBy(job *batchv1.Job) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         batchv1.SchemeGroupVersion.String(),
		Kind:               "Job",
		Name:               job.Name,
		UID:                job.UID,
		BlockOwnerDeletion: ptr(true),
	}
}

// ownerPatch is the merge patch that makes job the only owner of an object.
func ownerPatch(job *batchv1.Job) ([]byte, error) {
	type meta struct {
		OwnerReferences []metav1.OwnerReference `json:"ownerReferences"`
	}
	return json.Marshal(struct {
		Metadata meta `json:"metadata"`
	}{meta{[]metav1.OwnerReference{OwnedBy(job)}}})
}

// kubeObjects reads, creates and deletes the Jobs and Secrets of operations in one namespace: every write
// the worker makes to them goes through it.
type kubeObjects struct {
	kube kubernetes.Interface
	ns   string
}

// createSecret creates an operation's Secret. When it exists already (a previous attempt of this agent got
// this far), it returns the existing one, whose sealing key the pod will use, and existed is true.
func (k kubeObjects) createSecret(ctx context.Context, secret *corev1.Secret) (_ *corev1.Secret, existed bool, _ error) {
	secrets := k.kube.CoreV1().Secrets(k.ns)
	created, err := secrets.Create(ctx, secret, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		old, err := secrets.Get(ctx, secret.Name, metav1.GetOptions{})
		if err != nil {
			return nil, true, fmt.Errorf("reading existing Secret %s: %w", secret.Name, err)
		}
		return old, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("creating Secret %s/%s: %w", k.ns, secret.Name, err)
	}
	return created, false, nil
}

// createJob creates an operation's Job (or returns the one a previous attempt created) after its Secret. When
// the Job is refused, the Secret of the same name is of no use and is deleted; when ctx ended or the API server
// could not be reached or answer (KubeUnreachable), the Job may have been created all the same and both stay
// (the caller tries again, the next worker adopts both, or the sweeper removes the Secret).
func (k kubeObjects) createJob(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	jobs := k.kube.BatchV1().Jobs(k.ns)
	created, err := jobs.Create(ctx, job, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = jobs.Get(ctx, job.Name, metav1.GetOptions{})
	}
	if err != nil {
		if ctx.Err() == nil && !KubeUnreachable(err) {
			_, _ = k.deleteSecret(context.WithoutCancel(ctx), job.Name)
		}
		return nil, fmt.Errorf("creating Job %s/%s: %w", k.ns, job.Name, err)
	}
	return created, nil
}

// ownSecret makes job the owner of the Secret of the same name, so that the Secret goes with the Job.
func (k kubeObjects) ownSecret(ctx context.Context, job *batchv1.Job) error {
	patch, err := ownerPatch(job)
	if err != nil {
		return err
	}
	_, err = k.kube.CoreV1().Secrets(k.ns).Patch(ctx, job.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// getSecret reads a Secret from the API server (not the informer).
func (k kubeObjects) getSecret(ctx context.Context, name string) (*corev1.Secret, error) {
	return k.kube.CoreV1().Secrets(k.ns).Get(ctx, name, metav1.GetOptions{})
}

// jobGone asks the API server (not the informer) whether a Job is gone; an error other than NotFound counts
// as not gone.
func (k kubeObjects) jobGone(ctx context.Context, name string) bool {
	_, err := k.kube.BatchV1().Jobs(k.ns).Get(ctx, name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}

// deleteJob deletes a Job in the foreground: its pods go first, and the Secret it owns with it. A Job that is
// gone already is no error; deleted says whether this call deleted it.
func (k kubeObjects) deleteJob(ctx context.Context, name string) (deleted bool, _ error) {
	fg := metav1.DeletePropagationForeground
	return deletedBy(k.kube.BatchV1().Jobs(k.ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg}))
}

// deleteSecret deletes a Secret. A Secret that is gone already is no error; deleted says whether this call
// deleted it.
func (k kubeObjects) deleteSecret(ctx context.Context, name string) (deleted bool, _ error) {
	return deletedBy(k.kube.CoreV1().Secrets(k.ns).Delete(ctx, name, metav1.DeleteOptions{}))
}

func deletedBy(err error) (bool, error) {
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func ptr[T any](v T) *T { return &v }

// sealingKey is the key an operation's lines are sealed with: the server's, from the lease, so that the
// server can open what the pod pushes; a new one when the lease has none (an older server).
func sealingKey(lease *api.Lease) ([]byte, error) {
	if len(lease.SealingKey) == logline.KeySize {
		return lease.SealingKey, nil
	}
	return logline.NewKey()
}
