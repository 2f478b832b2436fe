// Package selfupdate upgrades the worker's own Helm release to another chart version, from inside the
// cluster, so that the upgrade outlives the worker pod it replaces.
//
// The shape: the worker (drained: it takes no new operations, but those it runs keep running as their own
// Jobs) calls Start, which stores the verified chart archive in a ConfigMap and starts a short Job in the
// release namespace that runs `octo-worker chartgen self-update` with the worker's own ServiceAccount and
// image. The Job (Run) upgrades the release with the release's current values, atomically: Helm waits for the
// new worker to be ready and rolls back on failure. Upgrading the Deployment replaces the old worker pod,
// which is why the upgrade does not run in it: a Job is not part of the release and keeps running. While no
// worker pod runs, the Job heartbeats for the worker so that its operations' leases do not expire (see
// WorkerLink). The worker that starts next (new, or old after a rollback) re-adopts the operations' Jobs,
// reads the outcome with LastOutcome and reports it.
package selfupdate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// Labels and annotations on the self-update ConfigMap and Job.
const (
	LabelComponent   = "app.kubernetes.io/component"
	ComponentValue   = "self-update"
	LabelRelease     = "octo-worker.io/release"
	AnnotVersion     = "octo-worker.io/version"
	AnnotSHA256      = "octo-worker.io/chart-sha256"
	AnnotFromVersion = "octo-worker.io/from-version"
	chartKey         = "chart.tgz"
)

// Request asks for an upgrade of one release.
type Request struct {
	Namespace        string        // the release namespace (the worker's)
	Release          string        // the worker's Helm release
	Version          string        // the version asked for (reported; the chart decides what is installed)
	FromVersion      string        // the running version (reported)
	ChartArchive     []byte        // the chart .tgz for Version
	SHA256           string        // hex digest the archive must have; empty: not checked here
	Image            string        // image of the Job: the running worker's image (it has the Helm SDK)
	Command          string        // the octo-worker binary in Image; default /usr/local/bin/octo-worker
	ServiceAccount   string        // the worker's ServiceAccount (its Role allows the upgrade)
	Timeout          time.Duration // how long the new worker may take to become ready; default 10 minutes
	ImagePullSecrets []corev1.LocalObjectReference
	Worker           *WorkerLink // nil: the Job does not keep the worker's leases alive
}

// JobName is the name of the self-update Job (and its ConfigMap) for a release and version.
func JobName(release, version string) string {
	sum := sha256.Sum256([]byte(release + "\x00" + version))
	base := release
	if len(base) > 40 {
		base = base[:40]
	}
	return strings.TrimSuffix(base, "-") + "-update-" + hex.EncodeToString(sum[:])[:10]
}

// Start verifies the chart archive, stores it in a ConfigMap and starts the upgrade Job. It returns the Job's
// name. Calling it again for the same version while that Job exists returns the existing Job.
func Start(ctx context.Context, kube kubernetes.Interface, req Request) (string, error) {
	if req.Namespace == "" || req.Release == "" || req.Image == "" || req.ServiceAccount == "" || req.Version == "" {
		return "", fmt.Errorf("self-update request needs namespace, release, version, image and service account: got %+v", redact(req))
	}
	sum := sha256.Sum256(req.ChartArchive)
	digest := hex.EncodeToString(sum[:])
	if req.SHA256 != "" && !strings.EqualFold(req.SHA256, digest) {
		return "", fmt.Errorf("chart for %s has sha256 %s, expected %s: refusing to install it", req.Version, digest, req.SHA256)
	}
	if _, err := chartgen.LoadChartArchive(req.ChartArchive); err != nil {
		return "", fmt.Errorf("checking the chart for %s: %w", req.Version, err)
	}
	if req.Timeout == 0 {
		req.Timeout = 10 * time.Minute
	}
	if req.Command == "" {
		req.Command = "/usr/local/bin/octo-worker"
	}
	name := JobName(req.Release, req.Version)
	labels := map[string]string{LabelComponent: ComponentValue, LabelRelease: req.Release}
	annotations := map[string]string{AnnotVersion: req.Version, AnnotSHA256: digest, AnnotFromVersion: req.FromVersion}
	cmAnnotations := maps.Clone(annotations)
	if req.Worker != nil {
		link, err := json.Marshal(req.Worker)
		if err != nil {
			return "", fmt.Errorf("encoding the worker link: %w", err)
		}
		cmAnnotations[AnnotWorker] = string(link)
	}

	existing, err := kube.BatchV1().Jobs(req.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil && finished(existing) == "":
		return name, nil // already upgrading to this version
	case err == nil:
		// A finished attempt at the same version: replace it with a new one.
		bg := metav1.DeletePropagationBackground
		if err := kube.BatchV1().Jobs(req.Namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("deleting the previous self-update Job %s: %w", name, err)
		}
		if err := waitGone(ctx, kube, req.Namespace, name); err != nil {
			return "", err
		}
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("reading self-update Job %s: %w", name, err)
	}

	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: req.Namespace, Labels: labels, Annotations: cmAnnotations},
		BinaryData: map[string][]byte{chartKey: req.ChartArchive},
	}
	if _, err := kube.CoreV1().ConfigMaps(req.Namespace).Create(ctx, cm, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		if _, err := kube.CoreV1().ConfigMaps(req.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return "", fmt.Errorf("storing the chart in ConfigMap %s: %w", name, err)
		}
	} else if err != nil {
		return "", fmt.Errorf("storing the chart in ConfigMap %s: %w", name, err)
	}

	yes, no := true, false
	uid := int64(1000)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: req.Namespace, Labels: labels, Annotations: annotations},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr(int32(0)),
			TTLSecondsAfterFinished: ptr(int32(7 * 24 * 3600)),
			// Helm's wait plus rollback, with room to start.
			ActiveDeadlineSeconds: ptr(int64((2*req.Timeout + 5*time.Minute).Seconds())),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{
					RestartPolicy:      corev1.RestartPolicyNever,
					ServiceAccountName: req.ServiceAccount,
					ImagePullSecrets:   req.ImagePullSecrets,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:    "self-update",
						Image:   req.Image,
						Command: []string{req.Command},
						Args: []string{"chartgen", "self-update",
							"--namespace", req.Namespace, "--release", req.Release,
							"--configmap", name, "--timeout", req.Timeout.String()},
						Env: []corev1.EnvVar{{Name: "OCTO_LOG_FORMAT", Value: "json"}},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi"),
						}},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
					}},
					Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
	if _, err := kube.BatchV1().Jobs(req.Namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("starting self-update Job %s: %w", name, err)
	}
	return name, nil
}

func waitGone(ctx context.Context, kube kubernetes.Interface, ns, name string) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(time.Minute)
	for {
		_, err := kube.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("the previous self-update Job %s is still being deleted after a minute", name)
		case <-t.C:
		}
	}
}

func redact(r Request) Request {
	r.ChartArchive = nil
	return r
}

func ptr[T any](v T) *T { return &v }

// maxReason bounds the failure reason quoted in Update's error: the worker sends that error in its heartbeats,
// whose health message the protocol limits (api.MaxMessageLen); half of it leaves room for the text around.
const maxReason = api.MaxMessageLen / 2

// clip shortens s to at most n bytes without splitting a UTF-8 sequence, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len(" [...]")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + " [...]"
}

// RunOptions say which upgrade the Job performs.
type RunOptions struct {
	Namespace string
	Release   string
	ConfigMap string        // holds the chart archive and its digest
	Timeout   time.Duration // Helm's wait for the new worker
}

// Run performs the upgrade (inside the self-update Job): it reads and re-verifies the chart, and upgrades the
// release with its current user-supplied values, atomically: when the new worker does not become ready within
// Timeout, Run records why (each new worker pod's waiting or terminated state), rolls the release back to its
// last deployed revision and returns an error that says both. Meanwhile, when the ConfigMap carries a
// WorkerLink, it keeps the worker's leases alive while no worker pod runs.
func Run(ctx context.Context, hc *action.Configuration, kube kubernetes.Interface, o RunOptions, log logrus.FieldLogger) error {
	cm, err := kube.CoreV1().ConfigMaps(o.Namespace).Get(ctx, o.ConfigMap, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the chart ConfigMap %s: %w", o.ConfigMap, err)
	}
	keeper, err := newLeaseKeeper(ctx, kube, cm, o.Release, log)
	if err != nil {
		// Not fatal: the upgrade goes on; operations survive it if the gap stays within the lease TTL.
		log.WithError(err).Warn("cannot keep the worker's leases alive during the upgrade")
	}
	if keeper != nil {
		kctx, stopKeeper := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); keeper.Run(kctx) }()
		defer func() { stopKeeper(); <-done }()
	}
	archive := cm.BinaryData[chartKey]
	sum := sha256.Sum256(archive)
	if got, want := hex.EncodeToString(sum[:]), cm.Annotations[AnnotSHA256]; got != want {
		return fmt.Errorf("the chart in ConfigMap %s has sha256 %s, expected %s: refusing to install it", o.ConfigMap, got, want)
	}
	ch, err := chartgen.LoadChartArchive(archive)
	if err != nil {
		return err
	}
	get := action.NewGetValues(hc)
	vals, err := get.Run(o.Release)
	if err != nil {
		return fmt.Errorf("reading the current values of release %s: %w", o.Release, err)
	}
	if err := checkTagNotPinned(vals, ch.Metadata.AppVersion); err != nil {
		return err
	}
	up := action.NewUpgrade(hc)
	up.Namespace = o.Namespace
	up.Wait = true
	up.Timeout = o.Timeout
	up.MaxHistory = 10
	up.CleanupOnFail = true
	// Not up.Atomic: Helm's own rollback would replace the new worker pods before anyone learnt why they
	// failed. Run looks at them first, then rolls back the same way Helm does.
	log.WithFields(logrus.Fields{"release": o.Release, "chart": ch.Metadata.Version, "appVersion": ch.Metadata.AppVersion}).Info("upgrading")
	rel, err := up.RunWithContext(ctx, o.Release, ch, vals)
	if err == nil {
		log.WithFields(logrus.Fields{"release": rel.Name, "revision": rel.Version}).Info("upgraded")
		return nil
	}
	why := notReady(ctx, kube, o.Namespace, o.Release)
	log.WithError(err).WithField("new_worker", why).Warn("upgrade failed; rolling back")
	failed := fmt.Errorf("upgrading release %s to chart %s: %w", o.Release, ch.Metadata.Version, err)
	if why != "" {
		failed = fmt.Errorf("%w; the new worker: %s", failed, why)
	}
	revision, rbErr := rollback(hc, o.Release, o.Timeout)
	if rbErr != nil {
		return fmt.Errorf("%w; rolling back failed too: %v", failed, rbErr)
	}
	log.WithField("revision", revision).Info("rolled back")
	return fmt.Errorf("%w; rolled back to revision %d", failed, revision)
}

// checkTagNotPinned refuses an upgrade whose values pin the worker image's tag to something other than the new
// chart's appVersion: the release would keep running the old worker, which would ask for the upgrade again.
func checkTagNotPinned(vals map[string]any, appVersion string) error {
	img, _ := vals["image"].(map[string]any)
	tag, _ := img["tag"].(string)
	if tag == "" || tag == appVersion {
		return nil
	}
	return fmt.Errorf("the release's values pin image.tag to %q, so the chart for %s would keep the old worker image: "+
		"remove image.tag (the chart's appVersion is used), or set selfUpdate.enabled=false and upgrade with helm", tag, appVersion)
}

// rollback rolls the release back to its last deployed (or superseded) revision, as Helm's atomic upgrade does,
// and waits for the worker to be ready again. It returns the revision it rolled back to.
func rollback(hc *action.Configuration, releaseName string, timeout time.Duration) (int, error) {
	hist, err := action.NewHistory(hc).Run(releaseName)
	if err != nil {
		return 0, fmt.Errorf("reading the release history: %w", err)
	}
	target := 0
	for _, r := range hist {
		if (r.Info.Status == release.StatusDeployed || r.Info.Status == release.StatusSuperseded) && r.Version > target {
			target = r.Version
		}
	}
	if target == 0 {
		return 0, errors.New("no earlier revision of the release was deployed successfully")
	}
	rb := action.NewRollback(hc)
	rb.Version = target
	rb.Wait = true
	rb.Timeout = timeout
	rb.CleanupOnFail = true
	rb.MaxHistory = 10
	if err := rb.Run(releaseName); err != nil {
		return target, fmt.Errorf("rolling back to revision %d: %w", target, err)
	}
	return target, nil
}

// notReady describes the release's worker pods, and its values-check hook pod, that are not ready: the waiting
// or terminated state of their containers, or why they are not scheduled. "" when it finds none.
func notReady(ctx context.Context, kube kubernetes.Interface, namespace, releaseName string) string {
	var items []corev1.Pod
	// The new worker pods, and the values-check hook's pod (it runs the new image first: a pull failure shows there).
	for _, sel := range []string{workerPodSelector(releaseName), "app.kubernetes.io/instance=" + releaseName + ",app.kubernetes.io/component=" + jobrunner.ValuesCheckComponent} {
		pods, err := kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return "listing the worker pods: " + err.Error()
		}
		items = append(items, pods.Items...)
	}
	var out []string
	for _, p := range items {
		if jobrunner.PodReady(&p) || p.DeletionTimestamp != nil {
			continue
		}
		var reasons []string
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				reasons = append(reasons, strings.TrimSpace(c.Reason+": "+c.Message))
			}
		}
		for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
			switch {
			case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
				reasons = append(reasons, fmt.Sprintf("container %s (%s) waiting: %s", cs.Name, cs.Image, strings.TrimSpace(cs.State.Waiting.Reason+" "+cs.State.Waiting.Message)))
			case cs.State.Terminated != nil:
				reasons = append(reasons, fmt.Sprintf("container %s (%s) exited with code %d: %s", cs.Name, cs.Image, cs.State.Terminated.ExitCode, strings.TrimSpace(cs.State.Terminated.Reason+" "+cs.State.Terminated.Message)))
			}
			if t := cs.LastTerminationState.Terminated; t != nil && cs.RestartCount > 0 {
				reasons = append(reasons, fmt.Sprintf("container %s restarted %d times, last exit code %d: %s", cs.Name, cs.RestartCount, t.ExitCode, strings.TrimSpace(t.Reason+" "+t.Message)))
			}
		}
		if len(reasons) == 0 {
			reasons = append(reasons, "phase "+string(p.Status.Phase)+", not ready")
		}
		out = append(out, "pod "+p.Name+": "+strings.Join(reasons, "; "))
	}
	sort.Strings(out)
	return strings.Join(out, " | ")
}
