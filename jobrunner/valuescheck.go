package jobrunner

import (
	"context"
	"fmt"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ValuesCheckComponent is the app.kubernetes.io/component label of the chart's values-check hook Job, which
// runs `octo-worker chartgen validate` on a release's values before helm installs or upgrades anything.
const ValuesCheckComponent = "values-check"

// refusedUpgrade says why helm refused the last install or upgrade of the worker's own release, or "". When the
// values-check hook fails, helm changes nothing: this worker keeps running its old values, and the failed
// hook Job stays (until the next install or upgrade) with the validator's output as its pod's termination
// message. The agent reports it in its heartbeats so that `workers list` shows it, not only `helm status`.
func refusedUpgrade(ctx context.Context, kube kubernetes.Interface, ns, release string) string {
	if release == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sel := "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=" + ValuesCheckComponent
	jobs, err := kube.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil || len(jobs.Items) == 0 {
		return ""
	}
	job := jobs.Items[0]
	if !jobFailed(&job) {
		return ""
	}
	why := "see kubectl logs job/" + job.Name
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job.Name})
	if err == nil {
		for _, p := range pods.Items {
			if msg := terminationMessage(p); msg != "" {
				why = msg
			}
		}
	}
	return fmt.Sprintf("helm refused the last install or upgrade of release %s (its values check failed at %s; this worker keeps its current values): %s",
		release, job.CreationTimestamp.UTC().Format(time.RFC3339), why)
}

func jobFailed(job *batchv1.Job) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func terminationMessage(p corev1.Pod) string {
	for _, s := range p.Status.ContainerStatuses {
		if t := s.State.Terminated; t != nil && t.Message != "" {
			return strings.Join(strings.Fields(t.Message), " ")
		}
	}
	return ""
}
