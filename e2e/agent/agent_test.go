package agent

import (
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// checkLines asserts that the stored log holds runner lines 1..n exactly once, in order, and returns them.
func checkLines(t *testing.T, lines []api.LogLine, n int64) []api.LogLine {
	t.Helper()
	got, err := runnerLines(lines, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// runnerLines returns the runner's lines of a stored log (seq > 0), or an error unless they are 1..n exactly
// once, in order.
func runnerLines(lines []api.LogLine, n int64) ([]api.LogLine, error) {
	var got []api.LogLine
	for _, l := range lines {
		if l.Seq == 0 {
			continue
		}
		if l.Seq != int64(len(got))+1 {
			return nil, fmt.Errorf("stored line #%d has seq %d: lines are missing, repeated or out of order", len(got)+1, l.Seq)
		}
		got = append(got, l)
	}
	if int64(len(got)) != n {
		return nil, fmt.Errorf("stored %d runner lines, want %d", len(got), n)
	}
	return got, nil
}

func texts(lines []api.LogLine, stream string) []string {
	var out []string
	for _, l := range lines {
		if l.Stream == stream {
			out = append(out, l.Text)
		}
	}
	return out
}

func systemText(lines []api.LogLine) string {
	return strings.Join(texts(lines, api.StreamSystem), "\n")
}

func TestExitCodesAndStreams(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	tests := []struct {
		name   string
		script string
		state  api.State
		code   int
		stdout []string
		stderr []string
	}{
		{"success", "echo one\necho two", api.StateSucceeded, 0, []string{"one", "two"}, nil},
		{"failure", "echo about to fail\necho 'it broke' >&2\nexit 3", api.StateFailed, 3, []string{"about to fail"}, []string{"it broke"}},
		{"streams apart", "echo out1; echo err1 >&2; echo out2; echo err2 >&2", api.StateSucceeded, 0, []string{"out1", "out2"}, []string{"err1", "err2"}},
	}
	ids := map[string]string{}
	for _, tc := range tests {
		ids[tc.name] = e.submit(api.OperationSpec{Name: tc.name, Script: tc.script})
	}
	for _, tc := range tests {
		op := e.wait(ids[tc.name])
		if op.State != tc.state || op.ExitCode == nil || *op.ExitCode != tc.code {
			t.Errorf("%s: state %s exit %v (%s), want %s exit %d", tc.name, op.State, deref(op.ExitCode), op.Message, tc.state, tc.code)
		}
		// The runner measured what the script used and the worker reported it. On the process node the runner
		// shares the host's cgroup, so it falls back to rusage.
		if u := op.Usage; u == nil || u.Source != api.UsageRusage || u.PeakMemoryBytes <= 0 {
			t.Errorf("%s: usage %+v, want a rusage measurement", tc.name, u)
		}
		lines := checkLines(t, e.logs(op.ID), int64(len(tc.stdout)+len(tc.stderr)))
		if got := texts(lines, api.StreamStdout); strings.Join(got, "|") != strings.Join(tc.stdout, "|") {
			t.Errorf("%s: stdout %q, want %q", tc.name, got, tc.stdout)
		}
		if got := texts(lines, api.StreamStderr); strings.Join(got, "|") != strings.Join(tc.stderr, "|") {
			t.Errorf("%s: stderr %q, want %q", tc.name, got, tc.stderr)
		}
	}
}

func TestTwoHundredThousandLines(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	const n = 200000
	id := e.submit(api.OperationSpec{Script: fmt.Sprintf("seq 1 %d", n)})
	op := e.waitFor(id, 10*time.Minute)
	if op.State != api.StateSucceeded {
		t.Fatalf("state %s: %s", op.State, op.Message)
	}
	lines := checkLines(t, e.logs(id), n)
	for i, l := range lines {
		if l.Text != fmt.Sprint(i+1) {
			t.Fatalf("line %d is %q", i+1, l.Text)
		}
	}
}

func TestStepImageOverride(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	def := e.submit(api.OperationSpec{Script: "cat /etc/octo-image"})
	own := e.submit(api.OperationSpec{Script: "cat /etc/octo-image", Image: stepImage})
	for id, want := range map[string]string{def: "tools image", own: "step image"} {
		op := e.wait(id)
		if op.State != api.StateSucceeded {
			t.Fatalf("state %s: %s", op.State, op.Message)
		}
		if got := texts(e.logs(id), api.StreamStdout); len(got) != 1 || got[0] != want {
			t.Errorf("operation ran in %q, want %q", got, want)
		}
	}
	pod := e.pod(own)
	if img := pod.Spec.Containers[0].Image; img != stepImage {
		t.Errorf("script container image %s, want %s", img, stepImage)
	}
}

func TestRequestsFromConfigAndCappedOverrides(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{values: `
scriptPods:
  resources:
    requests: {cpu: 150m, memory: 100Mi}
    maxRequests: {cpu: 500m, memory: 200Mi}
`})
	tests := []struct {
		name     string
		req      *api.Resources
		cpu, mem string
		capped   bool
	}{
		{"from configuration", nil, "150m", "100Mi", false},
		{"own within the maximum", &api.Resources{CPU: "300m", Memory: "150Mi"}, "300m", "150Mi", false},
		{"capped", &api.Resources{CPU: "4", Memory: "8Gi"}, "500m", "200Mi", true},
	}
	for _, tc := range tests {
		id := e.submit(api.OperationSpec{Name: tc.name, Script: "true", Requests: tc.req})
		op := e.wait(id)
		if op.State != api.StateSucceeded {
			t.Fatalf("%s: state %s: %s", tc.name, op.State, op.Message)
		}
		req := e.pod(id).Spec.Containers[0].Resources.Requests
		if !req.Cpu().Equal(resource.MustParse(tc.cpu)) || !req.Memory().Equal(resource.MustParse(tc.mem)) {
			t.Errorf("%s: pod requests %s/%s, want %s/%s", tc.name, req.Cpu(), req.Memory(), tc.cpu, tc.mem)
		}
		if got := strings.Contains(systemText(e.logs(id)), "above this worker's maximum"); got != tc.capped {
			t.Errorf("%s: log says capped = %v, want %v:\n%s", tc.name, got, tc.capped, systemText(e.logs(id)))
		}
	}
}

func TestUnschedulableThenNodeAdded(t *testing.T) {
	// Not parallel: it adds a node to the shared cluster.
	e := setup(t, agentOptions{values: `
scriptPods:
  resources:
    maxRequests: {cpu: "200"}
  pendingTimeout: 10m
`})
	id := e.submit(api.OperationSpec{Script: "echo found room", Requests: &api.Resources{CPU: "100"}})
	e.waitLog(id, "waiting for capacity")
	if _, err := kube.AddNode(context.Background(), cluster.NodeOptions{CPU: "128", Memory: "16Gi"}); err != nil {
		t.Fatal(err)
	}
	op := e.wait(id)
	if op.State != api.StateSucceeded {
		t.Fatalf("state %s: %s", op.State, op.Message)
	}
	logs := e.logs(id)
	if sys := systemText(logs); !strings.Contains(sys, "Insufficient cpu") || !strings.Contains(sys, "capacity found") {
		t.Errorf("system lines do not show the wait with the scheduler's message:\n%s", sys)
	}
	checkLines(t, logs, 1)
}

func TestPendingTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{values: `
scriptPods:
  resources:
    maxRequests: {cpu: "5000"}
  pendingTimeout: 10s
`})
	op := e.wait(e.submit(api.OperationSpec{Script: "true", Requests: &api.Resources{CPU: "5000"}}))
	if op.State != api.StateFailed || !strings.Contains(op.Message, "no capacity") || !strings.Contains(op.Message, "Insufficient cpu") {
		t.Fatalf("state %s: %q; want failed for lack of capacity with the scheduler's message", op.State, op.Message)
	}
	e.waitGone(op.ID)
}

func TestBadImages(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{values: "scriptPods:\n  imagePullGrace: 3s\n"})
	const image = "pull-fails.invalid/team/tools:1.0"
	id := e.submit(api.OperationSpec{Script: "true", Image: image})
	op := e.wait(id)
	if op.State != api.StateFailed || !strings.Contains(op.Message, image) || !strings.Contains(op.Message, "could not be pulled") || !strings.Contains(op.Message, "ImagePullBackOff") {
		t.Errorf("state %s: %q; want failed naming the image and the pull error", op.State, op.Message)
	}
	if sys := systemText(e.logs(id)); !strings.Contains(sys, "ErrImagePull") {
		t.Errorf("the log does not show the pull error as it happened:\n%s", sys)
	}
	e.waitGone(id)

	// An invalid image name never reaches a pod: the server refuses the step, naming the field. (The worker
	// also fails an operation at once on InvalidImageName, for names that a future server let through.)
	err := e.trySubmit(api.OperationSpec{Script: "true", Image: "Not//A:Valid::Image"})
	if err == nil || !strings.Contains(err.Error(), "image") || !strings.Contains(err.Error(), "Not//A:Valid::Image") {
		t.Errorf("submitting an invalid image name: %v; want a refusal naming the image", err)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	id := e.submit(api.OperationSpec{Script: "echo started\nsleep 120\necho never", TimeoutSeconds: 3})
	op := e.wait(id)
	if op.State != api.StateTimedOut {
		t.Fatalf("state %s (%s), want timed-out", op.State, op.Message)
	}
	if got := texts(e.logs(id), api.StreamStdout); len(got) != 1 || got[0] != "started" {
		t.Errorf("stdout %q, want just the line before the timeout", got)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{values: `
scriptPods:
  resources:
    maxRequests: {cpu: "5000"}
`})
	running := e.submit(api.OperationSpec{Name: "running", Script: "echo started\nsleep 300"})
	pending := e.submit(api.OperationSpec{Name: "pending", Script: "true", Requests: &api.Resources{CPU: "5000"}})
	e.waitLog(running, "started")
	e.waitLog(pending, "waiting for capacity")
	for _, id := range []string{running, pending} {
		e.cancel(id)
	}
	for _, id := range []string{running, pending} {
		op := e.wait(id)
		if op.State != api.StateCancelled {
			t.Errorf("state %s (%s), want cancelled", op.State, op.Message)
		}
		e.waitGone(id)
	}
}

// The worker stops mid-operation and starts again with the same identity: killed (SIGKILL), or terminated
// (SIGTERM, as when a self-update or a rollout replaces its pod), when it exits by itself after delivering
// what it read. Either way it reports nothing and deletes nothing on the way out: the operation stays running
// on the server, its Job and Secret stay, and the restarted worker re-adopts it and finishes it with every
// line exactly once.
func TestWorkerStoppedAndRestarted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		sig  syscall.Signal
	}{
		{"killed", syscall.SIGKILL},
		{"terminated", syscall.SIGTERM},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, agentOptions{})
			const n = 3000
			// About 15 s of output, so the worker stops in the middle.
			id := e.submit(api.OperationSpec{Script: fmt.Sprintf("for i in $(seq 1 %d); do echo line $i; if [ $((i %% 200)) = 0 ]; then sleep 1; fi; done", n)})
			e.waitLog(id, "line 400")
			err := e.agent.Stop(c.sig, 20*time.Second)
			if c.sig == syscall.SIGTERM {
				if err != nil {
					t.Fatalf("the agent did not exit cleanly on SIGTERM: %v\n%s", err, e.agent.Tail(30))
				}
				if log := e.agent.Tail(200); !strings.Contains(log, "worker stopping: lines delivered") {
					t.Errorf("the terminated agent did not deliver the lines it had read; its log ends:\n%s", e.agent.Tail(30))
				}
			}
			if op := e.get(id); op.State != api.StateRunning {
				t.Fatalf("after the worker stopped, the operation is %s (%s); want running", op.State, op.Message)
			}
			name := jobrunner.JobName(id)
			if _, err := kube.Client.BatchV1().Jobs(e.ns).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
				t.Fatalf("the operation's Job after the worker stopped: %v", err)
			}
			if _, err := kube.Client.CoreV1().Secrets(e.ns).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
				t.Fatalf("the operation's Secret after the worker stopped: %v", err)
			}
			e.restartAgent()
			op := e.waitFor(id, 5*time.Minute)
			if op.State != api.StateSucceeded {
				t.Fatalf("state %s: %s", op.State, op.Message)
			}
			lines := checkLines(t, e.logs(id), n)
			for i, l := range lines {
				if l.Text != fmt.Sprintf("line %d", i+1) {
					t.Fatalf("line %d is %q", i+1, l.Text)
				}
			}
			if !strings.Contains(systemText(e.logs(id)), "worker restarted") {
				t.Errorf("the log does not say the worker restarted")
			}
		})
	}
}

func TestServerRestarted(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	const n = 3000
	id := e.submit(api.OperationSpec{Script: fmt.Sprintf("for i in $(seq 1 %d); do echo line $i; if [ $((i %% 200)) = 0 ]; then sleep 1; fi; done", n)})
	e.waitLog(id, "line 400")
	e.server.Stop(syscall.SIGKILL, time.Second)
	time.Sleep(3 * time.Second) // the server is down for a while: the worker keeps lines and retries
	e.restartServer()
	op := e.waitFor(id, 5*time.Minute)
	if op.State != api.StateSucceeded {
		t.Fatalf("state %s: %s", op.State, op.Message)
	}
	checkLines(t, e.logs(id), n)
}

func TestSealedPayloads(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	const secret = "correct-horse-battery-staple"
	id := e.submit(api.OperationSpec{
		Script:    `echo "connecting with $DB_PASSWORD"; echo "plain marker"`,
		Variables: []api.Variable{{Name: "DB_PASSWORD", Value: secret, Sensitive: true}},
	})
	if op := e.wait(id); op.State != api.StateSucceeded {
		t.Fatalf("state %s: %s", op.State, op.Message)
	}
	rc, err := kube.Client.CoreV1().Pods(e.ns).GetLogs(e.pod(id).Name, &corev1.PodLogOptions{Container: jobrunner.ScriptContainerName}).Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(rc)
	rc.Close()
	if len(raw) == 0 || strings.Contains(string(raw), secret) || strings.Contains(string(raw), "plain marker") {
		t.Fatalf("raw pod log holds plain text (or nothing):\n%s", raw)
	}
	stored := strings.Join(texts(e.logs(id), api.StreamStdout), "\n")
	if strings.Contains(stored, secret) || !strings.Contains(stored, "plain marker") {
		t.Errorf("stored log should hold the output with the sensitive value masked:\n%s", stored)
	}
}

func TestJobsAndSecretsCleanedUp(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{values: "scriptPods:\n  ttlSecondsAfterFinished: 2\n"})
	id := e.submit(api.OperationSpec{Script: "echo done"})
	if op := e.wait(id); op.State != api.StateSucceeded {
		t.Fatalf("state %s: %s", op.State, op.Message)
	}
	e.waitGone(id) // TTL; the cancel path is covered by TestCancel
}

func TestSweeperRemovesOrphans(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{sweep: 2 * time.Second})
	// A Job and Secret labelled for this worker whose operation the server never leased to it (as left by a
	// crash between creating them and reporting, or a lease that expired).
	ctx := context.Background()
	labels := map[string]string{jobrunner.LabelManagedBy: jobrunner.ManagedByValue, jobrunner.LabelWorker: jobrunner.LabelValue(e.workerID()), jobrunner.LabelOperation: "orphan"}
	ann := map[string]string{jobrunner.AnnotationOperation: "orphan"}
	yes, no, uid := true, false, int64(1000)
	_, err := kube.Client.CoreV1().Secrets(e.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "octo-orphan", Labels: labels, Annotations: ann}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = kube.Client.BatchV1().Jobs(e.ns).Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "octo-orphan", Labels: labels, Annotations: ann},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: ann},
			Spec: corev1.PodSpec{
				RestartPolicy:   corev1.RestartPolicyNever,
				SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
				Containers: []corev1.Container{{Name: "c", Image: toolsImage, Command: []string{"sleep", "300"},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
			},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Minute, "the sweeper to delete the orphaned Job and Secret", func() bool {
		_, jerr := kube.Client.BatchV1().Jobs(e.ns).Get(ctx, "octo-orphan", metav1.GetOptions{})
		_, serr := kube.Client.CoreV1().Secrets(e.ns).Get(ctx, "octo-orphan", metav1.GetOptions{})
		return isNotFound(jerr) && isNotFound(serr)
	})
}

func TestDockerStepsRefused(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	err := e.trySubmit(api.OperationSpec{Script: "docker build .", Capabilities: []string{"docker"}})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "docker") {
		t.Fatalf("submitting a step that needs docker: %v; want a refusal that names the limitation", err)
	}
}

func TestTwoHundredConcurrentOperations(t *testing.T) {
	// Not parallel: it loads the machine.
	e := setup(t, agentOptions{values: manyOpsValues})
	const n = 200
	stop := make(chan struct{})
	peak := peakRSS(e.agent.Pid(), stop)
	before := metric(t, e.metricsURL(), "octo_worker_kube_requests_total")
	start := time.Now()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.submit(api.OperationSpec{Name: fmt.Sprintf("op-%d", i), Script: fmt.Sprintf("echo operation %d; sleep 2; echo done", i)})
	}
	for _, id := range ids {
		op := e.waitFor(id, 15*time.Minute)
		if op.State != api.StateSucceeded {
			t.Fatalf("operation %s: state %s: %s", id, op.State, op.Message)
		}
		checkLines(t, e.logs(id), 2)
	}
	elapsed := time.Since(start)
	requests := metric(t, e.metricsURL(), "octo_worker_kube_requests_total") - before
	close(stop)
	t.Logf("200 concurrent operations: all succeeded in %s; worker peak RSS %.1f MiB; %.1f Kubernetes API requests per operation",
		elapsed.Round(time.Second), float64(<-peak)/(1<<20), requests/n)
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestDrainAndResume(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	ctx := context.Background()
	workers, err := e.admin.Workers(ctx)
	if err != nil || len(workers) != 1 {
		t.Fatalf("workers: %v %v", workers, err)
	}
	w := workers[0]
	if _, err := e.admin.DrainWorker(ctx, w.ID, true); err != nil {
		t.Fatal(err)
	}
	var drainedAt time.Time
	waitUntil(t, time.Minute, "the worker to report that it drains", func() bool {
		ws, err := e.admin.Workers(ctx)
		if err == nil && len(ws) == 1 && ws[0].Draining {
			drainedAt = ws[0].LastHeartbeat
			return true
		}
		return false
	})
	id := e.submit(api.OperationSpec{Script: "echo ran after the drain ended"})
	// Two more heartbeats of the draining worker, and the operation is still queued.
	waitUntil(t, time.Minute, "two heartbeats while draining", func() bool {
		ws, err := e.admin.Workers(ctx)
		return err == nil && ws[0].LastHeartbeat.Sub(drainedAt) >= 2*time.Second
	})
	if op := e.get(id); op.State != api.StateQueued {
		t.Fatalf("operation is %s while its only worker drains; want queued", op.State)
	}
	if _, err := e.admin.DrainWorker(ctx, w.ID, false); err != nil {
		t.Fatal(err)
	}
	if op := e.wait(id); op.State != api.StateSucceeded {
		t.Fatalf("after resuming: state %s: %s", op.State, op.Message)
	}
}
