package chart

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/e2e/proc"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// `octo-worker install --apply` (the CLI, as a user runs it) installs the worker into a namespace that enforces
// Pod Security "restricted"; the worker pod runs in the cluster, registers with a dispatch server created and
// configured through the CLI, takes an operation and runs it as a Job in the tools image; the operation
// succeeds and its output is in the server's log.
func TestInstallApplyRunsAnOperation(t *testing.T) {
	start := time.Now()
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t)
	out := installWorker(t, ns, d)
	if want := "release " + releaseName + " in namespace " + ns + ": revision 1, deployed (chart " + versionA + ")"; !strings.Contains(out, want) {
		t.Errorf("install --apply printed:\n%s\nwant a line with %q", out, want)
	}
	installed := time.Since(start)
	// helm stores only what the user supplied, so a later chart's new defaults take effect.
	stored, errOut, err := kube.RunTool(t, "helm", "get", "values", releaseName, "-n", ns, "-o", "json")
	if err != nil {
		t.Fatalf("helm get values: %v\n%s", err, errOut)
	}
	for _, absent := range []string{"concurrency", "pendingTimeout", "seccompProfile", "maxRequests"} {
		if strings.Contains(stored, absent) {
			t.Errorf("helm get values shows the default %s, want only the user's values:\n%s", absent, stored)
		}
	}
	if !strings.Contains(stored, `"pools":["`+pool+`"]`) {
		t.Errorf("helm get values lacks the user's pools:\n%s", stored)
	}

	pod := runningWorkerPod(t, ns)
	if img := pod.Spec.Containers[0].Image; img != imageRepo+":"+versionA {
		t.Errorf("worker pod image %s, want %s:%s (the chart's appVersion)", img, imageRepo, versionA)
	}
	if pod.Spec.NodeName == "" || pod.Spec.ServiceAccountName != releaseName+"-octo-worker" {
		t.Errorf("worker pod on node %q as ServiceAccount %q", pod.Spec.NodeName, pod.Spec.ServiceAccountName)
	}
	w := d.waitWorker(t, 3*time.Minute, "registered, heartbeating version "+versionA, func(w api.Worker) bool {
		return w.Version == versionA && w.Healthy && time.Since(w.LastHeartbeat) < time.Minute
	})
	if !slices.Equal(w.Pools, []string{pool}) || w.Capacity != 10 {
		t.Errorf("worker pools %v capacity %d, want [%s] and the chart's default 10", w.Pools, w.Capacity, pool)
	}
	registered := time.Since(start)

	id := d.submit(t, "hello", "echo \"hello from the $(cat /etc/octo-image)\"\necho to-stderr >&2\n"+runnerVersionScript)
	op := d.waitOp(t, id, 3*time.Minute)
	lines, log := d.scriptLines(t, id)
	if op.State != api.StateSucceeded || op.ExitCode == nil || *op.ExitCode != 0 || op.WorkerID != w.ID {
		t.Fatalf("operation %s: %s exit %v by worker %q (%s), want succeeded with 0 by %s; log:\n%s", id, op.State, op.ExitCode, op.WorkerID, op.Message, w.ID, log)
	}
	// The two streams are separate pipes, so only the order within each is defined.
	byStream := map[string][]string{}
	for i, l := range lines {
		byStream[l.Stream] = append(byStream[l.Stream], l.Text)
		if l.Seq != int64(i+1) {
			t.Errorf("line %d has sequence %d; log:\n%s", i, l.Seq, log)
		}
	}
	want := map[string][]string{
		"stdout": {"hello from the " + toolsMarker, "runner: octo-worker version " + versionA},
		"stderr": {"to-stderr"},
	}
	for stream, w := range want {
		if got := byStream[stream]; !slices.Equal(got, w) || len(lines) != 3 {
			t.Errorf("%s lines %q, want %q (and 3 lines in all); log:\n%s", stream, got, w, log)
		}
	}

	// It ran as this worker's Job, in the release namespace, with the runner from the worker image.
	job, err := kube.Client.BatchV1().Jobs(ns).Get(context.Background(), jobrunner.JobName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the operation's Job: %v", err)
	}
	if job.Labels[jobrunner.LabelWorker] != jobrunner.LabelValue(w.ID) || job.Status.Succeeded != 1 {
		t.Errorf("Job %s: worker label %q, succeeded %d", job.Name, job.Labels[jobrunner.LabelWorker], job.Status.Succeeded)
	}
	spec := job.Spec.Template.Spec
	if spec.InitContainers[0].Image != imageRepo+":"+versionA || spec.Containers[0].Image != toolsRepo+":"+toolsTag {
		t.Errorf("Job images: init %s, script %s", spec.InitContainers[0].Image, spec.Containers[0].Image)
	}
	t.Logf("durations from the start: installed %s, worker registered %s, operation succeeded %s",
		installed.Round(time.Millisecond), registered.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// `install --apply` creates a missing namespace with Pod Security "restricted" enforced (the worker and its
// script pods pass it), where helm's --create-namespace would leave it unlabelled.
func TestInstallApplyLabelsTheNamespaceItCreates(t *testing.T) {
	t.Parallel()
	ns := fmt.Sprintf("install-apply-%d", time.Now().UnixNano()%1_000_000)
	t.Cleanup(func() {
		if err := kube.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
			t.Logf("deleting namespace %s: %v", ns, err)
		}
	})
	octo(t, nil, "install", "--apply", "--kubeconfig", kube.Kubeconfig, "--namespace", ns, "--release", releaseName,
		"--server-url", "https://deploy.example.com", "--registration-token", "unused", "--pool", pool,
		"--set", "image.repository="+imageRepo, "--set", fmt.Sprintf("worker.healthPort=%d", proc.FreePort(t)))
	got, err := kube.Client.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if level := got.Labels["pod-security.kubernetes.io/enforce"]; level != "restricted" {
		t.Errorf("namespace %s created by install --apply enforces Pod Security %q, want restricted (labels %v)", ns, level, got.Labels)
	}
}
