package selfupdate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Outcome is the result of the latest self-update of a release.
type Outcome struct {
	Job         string
	Version     string // the version asked for
	SHA256      string // digest of the chart it installs
	FromVersion string
	State       string // "running", "succeeded" or "failed"
	Message     string // why it failed (the Job's termination message or condition)
	Started     time.Time
	Finished    time.Time
}

// LastOutcome returns the most recent self-update of the release, or nil when there has been none.
func LastOutcome(ctx context.Context, kube kubernetes.Interface, namespace, release string) (*Outcome, error) {
	jobs, err := kube.BatchV1().Jobs(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelComponent + "=" + ComponentValue + "," + LabelRelease + "=" + release,
	})
	if err != nil {
		return nil, fmt.Errorf("listing self-update Jobs: %w", err)
	}
	if len(jobs.Items) == 0 {
		return nil, nil
	}
	sort.Slice(jobs.Items, func(i, j int) bool {
		return jobs.Items[i].CreationTimestamp.After(jobs.Items[j].CreationTimestamp.Time)
	})
	job := &jobs.Items[0]
	o := &Outcome{
		Job: job.Name, Version: job.Annotations[AnnotVersion], SHA256: job.Annotations[AnnotSHA256],
		FromVersion: job.Annotations[AnnotFromVersion],
		State:       "running", Started: job.CreationTimestamp.Time,
	}
	switch finished(job) {
	case batchv1.JobComplete:
		o.State = "succeeded"
	case batchv1.JobFailed:
		o.State = "failed"
		o.Message = failureMessage(ctx, kube, job)
	}
	if job.Status.CompletionTime != nil {
		o.Finished = job.Status.CompletionTime.Time
	}
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobFailed || c.Type == batchv1.JobComplete) && c.Status == corev1.ConditionTrue && o.Finished.IsZero() {
			o.Finished = c.LastTransitionTime.Time
		}
	}
	return o, nil
}

// finished returns JobComplete or JobFailed when the Job has finished, else "".
func finished(job *batchv1.Job) batchv1.JobConditionType {
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return c.Type
		}
	}
	return ""
}

// failureMessage prefers the container's termination message (the upgrade's own error) over the Job's
// condition message.
func failureMessage(ctx context.Context, kube kubernetes.Interface, job *batchv1.Job) string {
	pods, err := kube.CoreV1().Pods(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job.Name})
	if err == nil {
		for _, p := range pods.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if t := cs.State.Terminated; t != nil && t.Message != "" {
					return strings.TrimSpace(t.Message)
				}
				if t := cs.State.Terminated; t != nil {
					return "the self-update container exited with code " + strconv.Itoa(int(t.ExitCode))
				}
			}
		}
	}
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed {
			return c.Reason + ": " + c.Message
		}
	}
	return "failed"
}

// Updater starts self-updates for the worker agent (it satisfies jobrunner.Updater).
type Updater struct {
	Kube             kubernetes.Interface
	Namespace        string
	Release          string
	Image            string
	ServiceAccount   string
	FromVersion      string
	Timeout          time.Duration
	ImagePullSecrets []corev1.LocalObjectReference
	Worker           *WorkerLink // lets the upgrade Job keep the worker's leases alive (nil: it does not)
	Log              logrus.FieldLogger
}

// Update starts the upgrade Job for version with the chart archive and returns; the Job upgrades the release,
// which replaces this worker's pod (the worker's running operations' Jobs keep running, and the worker that
// starts next re-adopts them). The caller has verified the archive's digest against the dispatch server's.
// It starts nothing when Preflight refuses the chart, and nothing new while the Job for version runs.
func (u *Updater) Update(ctx context.Context, version string, chart []byte) error {
	if u == nil || u.Kube == nil {
		return errors.New("self-update is not configured")
	}
	sum := sha256.Sum256(chart)
	digest := hex.EncodeToString(sum[:])
	if err := u.Preflight(ctx, version, digest); err != nil {
		return err
	}
	name, err := Start(ctx, u.Kube, Request{
		Namespace: u.Namespace, Release: u.Release, Version: version, FromVersion: u.FromVersion,
		ChartArchive: chart, SHA256: digest, Image: u.Image, ServiceAccount: u.ServiceAccount, Timeout: u.Timeout,
		ImagePullSecrets: u.ImagePullSecrets, Worker: u.Worker,
	})
	if err != nil {
		return err
	}
	if u.Log != nil {
		u.Log.WithFields(logrus.Fields{"job": name, "version": version}).Info("self-update Job started; this pod will be replaced")
	}
	return nil
}

// Preflight refuses an upgrade to version with the chart of digest chartSHA256 when the latest self-update of
// the release installed exactly that chart and failed (it was rolled back), or succeeded and yet this worker
// still runs FromVersion: trying the same chart again would only take the worker down again. The error says
// why and what to do. The agent can ask before it drains; Update asks too.
func (u *Updater) Preflight(ctx context.Context, version, chartSHA256 string) error {
	if u == nil || u.Kube == nil {
		return errors.New("self-update is not configured")
	}
	last, err := LastOutcome(ctx, u.Kube, u.Namespace, u.Release)
	if err != nil {
		return err
	}
	if last == nil || last.Version != version || chartSHA256 == "" || !strings.EqualFold(last.SHA256, chartSHA256) {
		return nil
	}
	switch last.State {
	case "failed":
		return fmt.Errorf("the upgrade to %s failed and was rolled back (self-update Job %s, %s): %s. Not retrying the same chart: "+
			"fix the cause, then upload a new chart for %s or set another version on the dispatch server, or delete Job %s to retry",
			version, last.Job, last.Finished.UTC().Format(time.RFC3339), clip(last.Message, maxReason), version, last.Job)
	case "succeeded":
		if u.FromVersion != "" && u.FromVersion != version {
			return fmt.Errorf("the upgrade to %s succeeded (self-update Job %s) but this worker still runs %s: the worker image the chart "+
				"for %s names reports version %s; publish the right image, then upload a new chart or delete Job %s to retry",
				version, last.Job, u.FromVersion, version, u.FromVersion, last.Job)
		}
	}
	return nil
}
