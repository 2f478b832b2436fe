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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/chartgen/selfupdate"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
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

// gate lets gated scripts finish: a script in the tools image waits until the gate's file exists in
// /etc/octo-gates (the host directory gatesDir, bound in), so the test decides when an operation may end.
type gate struct{ name, path string }

// newGate returns a closed gate, opened when the test ends so that no script outlives it.
func newGate(t *testing.T) gate {
	name := fmt.Sprintf("gate-%d", time.Now().UnixNano())
	g := gate{name: name, path: filepath.Join(gatesDir, name)}
	t.Cleanup(func() { _ = os.Remove(g.path) })
	t.Cleanup(func() { g.open(t) })
	return g
}

func (g gate) open(t *testing.T) {
	if err := os.WriteFile(g.path, []byte("open\n"), 0o644); err != nil {
		t.Fatalf("opening gate %s: %v", g.name, err)
	}
}

// gatedScript prints the version of its runner (copied from the image of the worker that created its Job),
// then "<name> line 1", "<name> line 2", ... one a second until g opens, then "<name> done".
func gatedScript(name string, g gate) string {
	return fmt.Sprintf(`echo "runner: $(/octo/bin/octo-worker --version)"
n=1
while [ ! -e %s/%s ]; do echo "%s line $n"; n=$((n+1)); sleep 1; done
echo "%s done"`, gatesMount, g.name, name, name)
}

// checkGatedLog checks the stored log of a gatedScript operation: its script lines, numbered 1, 2, 3, ...,
// are the runner's version line, "<name> line 1" ... "<name> line k" and "<name> done", each exactly once and
// in order. It returns the runner's version line and the log for messages.
func (d *dispatchServer) checkGatedLog(t *testing.T, id, name string) (string, string) {
	t.Helper()
	lines, log := d.scriptLines(t, id)
	if len(lines) < 3 {
		t.Errorf("operation %s stored %d script lines; log:\n%s", id, len(lines), log)
		return "", log
	}
	want := []string{lines[0].Text}
	for n := 1; n < len(lines)-1; n++ {
		want = append(want, fmt.Sprintf("%s line %d", name, n))
	}
	want = append(want, name+" done")
	for i, l := range lines {
		if l.Seq != int64(i+1) || l.Text != want[i] {
			t.Errorf("operation %s: script line #%d is seq %d %q, want seq %d %q (lines missing, repeated or out of order); log:\n%s",
				id, i+1, l.Seq, l.Text, i+1, want[i], log)
			break
		}
	}
	return lines[0].Text, log
}

// readoption returns where, among the operation's stored lines in the server's order, the worker's note
// "worker restarted (octo-worker <version>)" is, and how many script lines came before it (sent by the
// worker that ran before); -1 when there is no such note.
func (d *dispatchServer) readoption(t *testing.T, id, version string) (note string, before int) {
	t.Helper()
	_, err := d.admin.Logs(context.Background(), id, client.LogsOptions{}, func(l api.LogLine) error {
		switch {
		case note != "":
		case l.Seq > 0:
			before++
		case strings.HasPrefix(l.Text, "worker restarted (octo-worker "+version+")"):
			note = l.Text
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the log of %s: %v", id, err)
	}
	if note == "" {
		return "", -1
	}
	return note, before
}

// jobLog returns the log of the (first) pod of a Job.
func jobLog(t *testing.T, ns, job string) string {
	t.Helper()
	pods, err := kube.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("the pod of Job %s: %d pods, %v", job, len(pods.Items), err)
	}
	raw, err := kube.Client.CoreV1().Pods(ns).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("the log of Job %s: %v", job, err)
	}
	return string(raw)
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

// Self-update from A to B with operations in flight: the worker drains (it reports draining) and starts the
// upgrade at once, without waiting for its operations, whose Jobs keep running. Worker A is replaced by
// worker B (same identity), which re-adopts the operations: each was started by A (its Job copies A's
// runner), shipped lines through A, then through B, which reports its result; every line arrives exactly once,
// in order. The operations are gated: they cannot end before the test opens their gate, which it does only
// once the worker reports B and A's pod is gone. The release revision increases, new operations run with B's
// runner, and an operation submitted during the drain waits for B.
func TestSelfUpdateAToBWithOperationsInFlight(t *testing.T) {
	start := time.Now()
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t)
	installWorker(t, ns, d, "selfUpdate.timeout=3m")
	wA := d.waitWorker(t, 3*time.Minute, "registered as "+versionA, func(w api.Worker) bool {
		return w.Version == versionA && w.Healthy
	})

	const inFlight = 3
	g := newGate(t)
	ids, names := make([]string, inFlight), make([]string, inFlight)
	for i := range ids {
		names[i] = fmt.Sprintf("op %d", i)
		ids[i] = d.submit(t, fmt.Sprintf("in-flight-%d", i), gatedScript(names[i], g))
	}
	for i, id := range ids {
		waitFor(t, 3*time.Minute, "operation "+id+" to print its first counted line", func() (bool, string) {
			lines, _ := d.scriptLines(t, id)
			return len(lines) > 1, fmt.Sprintf("%d lines", len(lines))
		})
		if img := jobInitImage(t, ns, id); img != imageRepo+":"+versionA {
			t.Errorf("the Job of in-flight operation %d copies its runner from %s, want worker A's image", i, img)
		}
	}
	_, before := history(t, ns)
	asked := time.Now()
	askForVersion(t, d, versionB)

	// The worker drains: it takes no new leases while its Jobs keep running. It says so in a heartbeat just
	// before it starts the upgrade, which can replace it within seconds: look often.
	pollFor(t, 2*time.Minute, 50*time.Millisecond, "the worker: draining for the upgrade", func() (bool, string) {
		w, state := d.worker(t)
		return w != nil && w.Draining, state
	})
	drained := time.Since(asked)
	duringDrain := d.submit(t, "submitted-during-drain", runnerVersionScript)

	// The upgrade does not wait for the operations: B runs while all of them still do.
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
	if pod := runningWorkerPod(t, ns); pod.Spec.Containers[0].Image != imageRepo+":"+versionB {
		t.Errorf("worker pod image %s after the upgrade", pod.Spec.Containers[0].Image)
	}
	for _, id := range ids {
		if op, err := d.admin.Operation(context.Background(), id); err != nil || op.State != api.StateRunning {
			t.Fatalf("in-flight operation %s is %s (%q, %v) when worker B runs; want running (its gate is closed)", id, op.State, op.Message, err)
		}
	}

	// Worker B follows the operations to their end.
	g.open(t)
	for i, id := range ids {
		op := d.waitOp(t, id, 5*time.Minute)
		runner, log := d.checkGatedLog(t, id, names[i])
		if op.State != api.StateSucceeded || op.ExitCode == nil || *op.ExitCode != 0 {
			t.Errorf("in-flight operation %s: %s (%s), want succeeded; log:\n%s", id, op.State, op.Message, log)
		}
		if want := "runner: octo-worker version " + versionA; runner != want {
			t.Errorf("in-flight operation %s printed %q first, want %q (its Job was created by worker A)", id, runner, want)
		}
		note, shippedByA := d.readoption(t, id, versionB)
		if note == "" || shippedByA < 2 {
			t.Errorf("in-flight operation %s: worker %s's re-adoption note %q after %d script lines, want one after at least 2 lines shipped by %s; log:\n%s",
				id, versionB, note, shippedByA, versionA, log)
		} else {
			t.Logf("operation %s: %d script lines stored before %q", id, shippedByA, note)
		}
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
	t.Logf("durations: test %s; upgrade asked → worker draining %s; → worker heartbeating as %s %s (%d operations running throughout); history %v",
		time.Since(start).Round(time.Millisecond), drained.Round(time.Millisecond), versionB, upgraded.Round(time.Millisecond), inFlight, hist)
}

// A self-update whose new worker cannot start (its image cannot be pulled) is rolled back: worker A runs again,
// re-adopts the operation that was running when the upgrade started, reports in its heartbeat (and in
// `workers list`) why the upgrade failed, takes operations again, and does not try the same chart again.
// No worker runs for longer than the server's lease TTL (40 s here: Helm waits a minute for the new worker,
// then rolls back), so the operation survives only because the self-update Job renews the worker's leases
// meanwhile.
func TestSelfUpdateFailureLeavesARunning(t *testing.T) {
	start := time.Now()
	ns := kube.Namespace(t, restricted)
	d := startDispatch(t, "--lease-ttl", "40s")
	installWorker(t, ns, d, "selfUpdate.timeout=1m")
	wA := d.waitWorker(t, 3*time.Minute, "registered as "+versionA, func(w api.Worker) bool {
		return w.Version == versionA && w.Healthy
	})
	g := newGate(t)
	const name = "across the failed upgrade"
	inFlight := d.submit(t, "in-flight", gatedScript(name, g))
	waitFor(t, 3*time.Minute, "operation "+inFlight+" to print its first counted line", func() (bool, string) {
		lines, _ := d.scriptLines(t, inFlight)
		return len(lines) > 1, fmt.Sprintf("%d lines", len(lines))
	})
	broken := "0.3.0" + missingSuffix
	podA := runningWorkerPod(t, ns)
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
	// The values-check hook runs the new image first, so its pull failure stops the upgrade before the worker
	// Deployment changes.
	for _, want := range []string{"rolled back", "(" + imageRepo + ":" + broken + ")", "ImagePull"} {
		if !strings.Contains(w.HealthMessage, want) {
			t.Errorf("the health message does not say %q", want)
		}
	}
	// The table shows the reason too, not only -o json.
	if table := octo(t, d.env, "workers", "list"); !strings.Contains(table, "self-update to "+broken+" failed") {
		t.Errorf("workers list does not show the failed upgrade's reason:\n%s", table)
	}

	// The operation that ran when the upgrade started was not lost: worker A kept following it in the same pod.
	if op, err := d.admin.Operation(context.Background(), inFlight); err != nil || op.State != api.StateRunning {
		t.Fatalf("the in-flight operation is %s (%q, %v) after the rollback; want running (its gate is closed)", op.State, op.Message, err)
	}
	g.open(t)
	if op := d.waitOp(t, inFlight, 5*time.Minute); op.State != api.StateSucceeded {
		t.Errorf("the in-flight operation: %s (%s), want succeeded", op.State, op.Message)
	}
	runner, log := d.checkGatedLog(t, inFlight, name)
	if want := "runner: octo-worker version " + versionA; runner != want {
		t.Errorf("the in-flight operation printed %q first, want %q", runner, want)
	}
	if note, _ := d.readoption(t, inFlight, versionA); note != "" {
		t.Errorf("the in-flight operation was re-adopted (%q), but the refused upgrade never replaced the worker; log:\n%s", note, log)
	}
	if pod := runningWorkerPod(t, ns); pod.UID != podA.UID {
		t.Errorf("the worker pod %s was replaced by %s, though the upgrade was refused before the Deployment changed", podA.Name, pod.Name)
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
