package chart

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/chartgen/selfupdate"
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// askForVersion uploads the chart for version (appVersion = version, so the worker image octo-worker:version)
// and makes it the desired version, with the CLI as an administrator does.
func askForVersion(t *testing.T, d *dispatchServer, version string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "octo-worker-"+version+".tgz")
	if err := os.WriteFile(path, chartArchive(t, version, version), 0o644); err != nil {
		t.Fatal(err)
	}
	out := octo(t, d.env, "workers", "upgrade", "--version", version, "--chart", path)
	if !strings.Contains(out, "workers will upgrade to "+version) {
		t.Fatalf("workers upgrade printed %q", out)
	}
}

// countingScript prints "<name> line 1" .. "<name> line n", one a second.
func countingScript(name string, n int) string {
	return fmt.Sprintf("i=1\nwhile [ $i -le %d ]; do echo \"%s line $i\"; sleep 1; i=$((i+1)); done", n, name)
}

// runnerVersion waits for an operation of runnerVersionScript, checks that it succeeded with one script line,
// and returns that line: the version of the runner, which comes from the image of the worker that ran it.
func (d *dispatchServer) runnerVersion(t *testing.T, id string) string {
	t.Helper()
	op := d.waitOp(t, id, 5*time.Minute)
	lines, log := d.scriptLines(t, id)
	if op.State != api.StateSucceeded || len(lines) != 1 {
		t.Fatalf("operation %s: %s (%s), %d script lines, want succeeded with one; log:\n%s", id, op.State, op.Message, len(lines), log)
	}
	return lines[0].Text
}

// Self-update from A to B with operations in flight: the worker drains (it reports draining; Jobs keep
// running), every operation in flight finishes with each of its lines exactly once, the worker upgrades its
// own release through the self-update Job, comes back as B with the same identity, and runs new operations
// with B's runner. An operation submitted during the drain waits for B.
func TestSelfUpdateAToBWithOperationsInFlight(t *testing.T) {
	start := time.Now()
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t)
	installWorker(t, ns, d, "selfUpdate.timeout=3m")
	wA := d.waitWorker(t, 3*time.Minute, "registered as "+versionA, func(w api.Worker) bool {
		return w.Version == versionA && w.Healthy
	})

	const inFlight, lineCount = 3, 30
	ids := make([]string, inFlight)
	for i := range ids {
		ids[i] = d.submit(t, fmt.Sprintf("in-flight-%d", i), countingScript(fmt.Sprintf("op %d", i), lineCount))
	}
	for _, id := range ids {
		waitFor(t, 3*time.Minute, "operation "+id+" to print its first line", func() (bool, string) {
			lines, _ := d.scriptLines(t, id)
			return len(lines) > 0, fmt.Sprintf("%d lines", len(lines))
		})
	}
	_, before := history(t, ns)
	asked := time.Now()
	askForVersion(t, d, versionB)
	for _, id := range ids {
		if op, err := d.admin.Operation(context.Background(), id); err != nil || op.State.Terminal() {
			t.Fatalf("operation %s ended before the upgrade was asked for (%v %v): the test needs longer operations", id, op.State, err)
		}
	}

	// The worker drains: it takes no new leases while its Jobs keep running.
	d.waitWorker(t, 2*time.Minute, "draining for the upgrade", func(w api.Worker) bool { return w.Draining })
	drained := time.Since(asked)
	duringDrain := d.submit(t, "submitted-during-drain", runnerVersionScript)

	for i, id := range ids {
		op := d.waitOp(t, id, 5*time.Minute)
		lines, log := d.scriptLines(t, id)
		var want []string
		for n := 1; n <= lineCount; n++ {
			want = append(want, fmt.Sprintf("op %d line %d", i, n))
		}
		if op.State != api.StateSucceeded || !slices.Equal(texts(lines), want) {
			t.Errorf("in-flight operation %s: %s (%s), want succeeded with %d lines, each once; log:\n%s", id, op.State, op.Message, lineCount, log)
		}
		for n, l := range lines {
			if l.Seq != int64(n+1) {
				t.Errorf("operation %s line %d has sequence %d", id, n, l.Seq)
				break
			}
		}
	}

	wB := d.waitWorker(t, 8*time.Minute, "heartbeating as "+versionB+", healthy, not draining", func(w api.Worker) bool {
		return w.Version == versionB && w.Healthy && !w.Draining
	})
	upgraded := time.Since(asked)
	if wB.ID != wA.ID {
		t.Errorf("the upgraded worker registered again as %s; want the same identity %s", wB.ID, wA.ID)
	}
	if wB.HealthMessage != "" {
		t.Errorf("the upgraded worker reports %q", wB.HealthMessage)
	}
	// The new worker heartbeats as soon as it runs; the self-update Job ends when Helm has seen it ready.
	o := waitOutcome(t, ns, 5*time.Minute)
	if o.State != "succeeded" || o.Version != versionB || o.FromVersion != versionA {
		t.Errorf("self-update %+v, want succeeded from %s to %s", o, versionA, versionB)
	}
	hist, latest := history(t, ns)
	if latest.Version <= before.Version || latest.Info.Status != release.StatusDeployed ||
		latest.Chart.Metadata.Version != versionB || latest.Chart.Metadata.AppVersion != versionB {
		t.Errorf("release history %v (revision %d before), want a newer deployed revision of chart %s", hist, before.Version, versionB)
	}
	if pod := runningWorkerPod(t, ns); pod.Spec.Containers[0].Image != imageRepo+":"+versionB {
		t.Errorf("worker pod image %s after the upgrade", pod.Spec.Containers[0].Image)
	}

	// The operation submitted while the worker drained waited for the new worker (a drain also ends the lease
	// long-poll the old worker had in flight).
	if got, want := d.runnerVersion(t, duringDrain), "runner: octo-worker version "+versionB; got != want {
		t.Errorf("the operation submitted during the drain printed %q, want %q", got, want)
	}

	after := d.submit(t, "after-upgrade", runnerVersionScript)
	if got, want := d.runnerVersion(t, after), "runner: octo-worker version "+versionB; got != want {
		t.Errorf("an operation after the upgrade printed %q, want %q", got, want)
	}
	if img := jobInitImage(t, ns, after); img != imageRepo+":"+versionB {
		t.Errorf("the Job of an operation after the upgrade copies its runner from %s", img)
	}
	t.Logf("durations: test %s; upgrade asked → worker draining %s; → worker heartbeating as %s %s; history %v",
		time.Since(start).Round(time.Millisecond), drained.Round(time.Millisecond), versionB, upgraded.Round(time.Millisecond), hist)
}

// A self-update whose new worker cannot start (its image cannot be pulled) is rolled back: worker A runs again,
// reports in its heartbeat why the upgrade failed, takes operations again, and does not try the same chart
// again.
func TestSelfUpdateFailureLeavesARunning(t *testing.T) {
	start := time.Now()
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t)
	installWorker(t, ns, d, "selfUpdate.timeout=1m")
	wA := d.waitWorker(t, 3*time.Minute, "registered as "+versionA, func(w api.Worker) bool {
		return w.Version == versionA && w.Healthy
	})
	broken := "0.3.0" + missingSuffix
	asked := time.Now()
	askForVersion(t, d, broken)

	w := d.waitWorker(t, 8*time.Minute, versionA+" again, reporting the failed upgrade", func(w api.Worker) bool {
		return w.Version == versionA && !w.Draining && strings.Contains(w.HealthMessage, "self-update to "+broken+" failed")
	})
	reported := time.Since(asked)
	t.Logf("the worker reports: %s", w.HealthMessage)
	if w.ID != wA.ID {
		t.Errorf("worker id %s after the rollback, want %s", w.ID, wA.ID)
	}
	for _, want := range []string{"rolled back", "container worker (" + imageRepo + ":" + broken + ")", "ImagePull"} {
		if !strings.Contains(w.HealthMessage, want) {
			t.Errorf("the health message does not say %q", want)
		}
	}
	hist, latest := history(t, ns)
	failed := slices.ContainsFunc(hist, func(h string) bool { return strings.HasSuffix(h, ":"+broken+":"+release.StatusFailed.String()) })
	if !failed || latest.Chart.Metadata.Version != versionA || latest.Info.Status != release.StatusDeployed {
		t.Errorf("release history %v, want the %s revision failed and %s deployed again", hist, broken, versionA)
	}
	if pod := runningWorkerPod(t, ns); pod.Spec.Containers[0].Image != imageRepo+":"+versionA {
		t.Errorf("worker pod image %s after the rollback", pod.Spec.Containers[0].Image)
	}

	// A takes operations again.
	id := d.submit(t, "after-failed-upgrade", runnerVersionScript)
	if got, want := d.runnerVersion(t, id), "runner: octo-worker version "+versionA; got != want {
		t.Errorf("an operation after the failed upgrade printed %q, want %q", got, want)
	}
	// It did not start the same upgrade again meanwhile (each attempt takes the worker down): the one
	// self-update Job is the failed one, which ran as the worker's own ServiceAccount (in a namespace enforcing
	// Pod Security restricted) and kept its chart ConfigMap for the record.
	o, err := selfupdate.LastOutcome(context.Background(), kube.Client, ns, releaseName)
	if err != nil || o == nil || o.State != "failed" || o.Version != broken || o.FromVersion != versionA {
		t.Fatalf("last self-update %+v (%v), want failed from %s to %s", o, err, versionA, broken)
	}
	if strings.Contains(o.Message, "forbidden") {
		t.Errorf("the worker's ServiceAccount lacks a permission the upgrade needs: %s", o.Message)
	}
	jobs, err := kube.Client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: selfupdate.LabelComponent + "=" + selfupdate.ComponentValue,
	})
	if err != nil || len(jobs.Items) != 1 {
		t.Fatalf("self-update Jobs: %d (%v), want the one that failed", len(jobs.Items), err)
	}
	if j := jobs.Items[0]; j.Name != o.Job || j.Status.Failed == 0 || j.Status.Active != 0 {
		t.Errorf("self-update Job %s: failed %d, active %d; want only the failed %s", j.Name, j.Status.Failed, j.Status.Active, o.Job)
	} else if sa := j.Spec.Template.Spec.ServiceAccountName; sa != releaseName+"-octo-worker" {
		t.Errorf("the self-update Job ran as %s", sa)
	}
	if _, err := kube.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), o.Job, metav1.GetOptions{}); err != nil {
		t.Errorf("the chart ConfigMap of %s: %v", o.Job, err)
	}
	if w2, _ := d.worker(t); w2 == nil || w2.Version != versionA || w2.Draining {
		t.Errorf("worker after the operation: %+v", w2)
	}
	t.Logf("durations: test %s; upgrade asked → failure reported by %s %s; history %v",
		time.Since(start).Round(time.Millisecond), versionA, reported.Round(time.Millisecond), hist)
}
