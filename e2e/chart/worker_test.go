package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/e2e/proc"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// pool is the worker pool of these tests; release is the worker's Helm release.
const (
	pool        = "e2e"
	releaseName = "ow"
)

// dispatchServer is a dispatch server process on loopback (its own SQLite file) with the pool created and a
// registration token issued through the octo-worker CLI, as an administrator would.
type dispatchServer struct {
	url      string
	env      []string // OCTO_SERVER and OCTO_TOKEN for the CLI
	admin    *client.Client
	proc     *proc.Proc
	regToken string
}

// startDispatch starts the server with a heartbeat interval of 2 s and the server flags in extra.
func startDispatch(t *testing.T, extra ...string) *dispatchServer {
	t.Helper()
	port := proc.FreePort(t)
	adminToken := fmt.Sprintf("e2e-chart-admin-%d", time.Now().UnixNano())
	d := &dispatchServer{url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	d.env = []string{"OCTO_SERVER=" + d.url, "OCTO_TOKEN=" + adminToken}
	d.proc = proc.Start(t, binary, "dispatch-server", nil, append([]string{"--log-format", "text", "server",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--db", filepath.Join(t.TempDir(), "octo-worker.db"),
		"--admin-token", adminToken, "--heartbeat-interval", "2s"}, extra...)...)
	admin, err := client.New(client.Config{Server: d.url, Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	d.admin = admin
	d.proc.WaitHTTP(t, d.url+"/healthz", time.Minute)
	octo(t, d.env, "pool", "create", "--description", "end-to-end tests of the chart", pool)
	var tok api.RegistrationToken
	if err := json.Unmarshal([]byte(octo(t, d.env, "token", "create", "--pool", pool, "--ttl", "1h", "-o", "json")), &tok); err != nil || tok.Token == "" {
		t.Fatalf("token create -o json: %v (%+v)", err, tok)
	}
	d.regToken = tok.Token
	return d
}

// installWorker runs `octo-worker install --apply` (the embedded chart, version A) into ns with this server,
// pool and token, the test images, and a free health port (pods share the host's network here).
func installWorker(t *testing.T, ns string, d *dispatchServer, sets ...string) string {
	t.Helper()
	args := []string{"install", "--apply", "--wait", "--timeout", "3m",
		"--kubeconfig", kube.Kubeconfig, "--namespace", ns, "--release", releaseName,
		"--server-url", d.url, "--registration-token", d.regToken, "--pool", pool,
		"--set", "image.repository=" + imageRepo,
		"--set", "scriptPods.worker.image.repository=" + toolsRepo,
		"--set", "scriptPods.worker.image.tag=" + toolsTag,
		"--set", "worker.heartbeatInterval=2s",
		"--set", fmt.Sprintf("worker.healthPort=%d", proc.FreePort(t)),
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- worker pods of %s:\n%s", ns, workerPodReport(ns))
		}
	})
	return octo(t, nil, args...)
}

// worker returns the registered worker named like the release, or nil.
func (d *dispatchServer) worker(t *testing.T) (*api.Worker, string) {
	t.Helper()
	ws, err := d.admin.Workers(context.Background())
	if err != nil {
		return nil, err.Error()
	}
	for i := range ws {
		if ws[i].Name == releaseName {
			return &ws[i], fmt.Sprintf("%+v", ws[i])
		}
	}
	return nil, fmt.Sprintf("no worker named %s among %d", releaseName, len(ws))
}

// waitWorker waits until the worker's latest heartbeat satisfies cond.
func (d *dispatchServer) waitWorker(t *testing.T, within time.Duration, what string, cond func(api.Worker) bool) api.Worker {
	t.Helper()
	var w *api.Worker
	waitFor(t, within, "the worker: "+what, func() (bool, string) {
		var state string
		w, state = d.worker(t)
		return w != nil && cond(*w), state
	})
	return *w
}

func (d *dispatchServer) submit(t *testing.T, name, script string) string {
	t.Helper()
	op, err := d.admin.Submit(context.Background(), api.OperationSpec{Name: name, Pool: pool, Syntax: "sh", Script: script})
	if err != nil {
		t.Fatalf("submitting %s: %v", name, err)
	}
	return op.ID
}

// waitOp waits until the operation is in a terminal state.
func (d *dispatchServer) waitOp(t *testing.T, id string, within time.Duration) api.Operation {
	t.Helper()
	var op api.Operation
	waitFor(t, within, "operation "+id+" to finish", func() (bool, string) {
		var err error
		op, err = d.admin.Operation(context.Background(), id)
		if err != nil {
			return false, err.Error()
		}
		return op.State.Terminal(), fmt.Sprintf("%s %q", op.State, op.Message)
	})
	return op
}

// scriptLines returns the operation's stored lines that its script wrote (sequence numbers from 1), in the
// server's order, and the texts of every line for messages.
func (d *dispatchServer) scriptLines(t *testing.T, id string) ([]api.LogLine, string) {
	t.Helper()
	var lines []api.LogLine
	var all strings.Builder
	_, err := d.admin.Logs(context.Background(), id, client.LogsOptions{}, func(l api.LogLine) error {
		fmt.Fprintf(&all, "%5d %-6s %s\n", l.Seq, l.Stream, l.Text)
		if l.Seq > 0 {
			lines = append(lines, l)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the log of %s: %v", id, err)
	}
	return lines, all.String()
}

// texts returns the lines' texts.
func texts(lines []api.LogLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

// workerPods lists the worker's pods (the release's Deployment) in ns.
func workerPods(ns string) ([]corev1.Pod, error) {
	pods, err := kube.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + releaseName + ",app.kubernetes.io/component=worker",
	})
	if err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// workerPodReport describes each worker pod and the end of its log, for a failing test.
func workerPodReport(ns string) string {
	pods, err := workerPods(ns)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&b, "pod %s phase %s image %s\n", p.Name, p.Status.Phase, p.Spec.Containers[0].Image)
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, "  %s ready=%v restarts=%d state=%+v\n", cs.Name, cs.Ready, cs.RestartCount, cs.State)
		}
		lines := int64(40)
		raw, err := kube.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "worker", TailLines: &lines}).DoRaw(context.Background())
		if err != nil {
			fmt.Fprintf(&b, "  log: %v\n", err)
			continue
		}
		fmt.Fprintf(&b, "  log:\n%s\n", raw)
	}
	return b.String()
}

// runningWorkerPod waits until exactly one worker pod runs (not being deleted) and returns it.
func runningWorkerPod(t *testing.T, ns string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	waitFor(t, 2*time.Minute, "one running worker pod", func() (bool, string) {
		pods, err := workerPods(ns)
		if err != nil {
			return false, err.Error()
		}
		var running []corev1.Pod
		var states []string
		for _, p := range pods {
			states = append(states, p.Name+":"+string(p.Status.Phase))
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				running = append(running, p)
			}
		}
		if len(running) == 1 && len(pods) == 1 {
			pod = running[0]
			return true, ""
		}
		return false, strings.Join(states, ", ")
	})
	return pod
}

// history returns the release's revisions as "revision:chart version:status", oldest first, and the latest.
func history(t *testing.T, ns string) ([]string, *release.Release) {
	t.Helper()
	hc, err := chartgen.HelmConfig(kube.RESTConfig(), ns, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := action.NewHistory(hc).Run(releaseName)
	if err != nil {
		t.Fatalf("release history: %v", err)
	}
	sort.Slice(hist, func(i, j int) bool { return hist[i].Version < hist[j].Version })
	var out []string
	for _, r := range hist {
		out = append(out, fmt.Sprintf("%d:%s:%s", r.Version, r.Chart.Metadata.Version, r.Info.Status))
	}
	return out, hist[len(hist)-1]
}

// runnerVersionScript prints the version of the runner the script pod copied from the worker image.
const runnerVersionScript = "echo \"runner: $(/octo/bin/octo-worker --version)\""

// jobInitImage returns the image of the init container of the operation's Job: the worker image of the
// worker that created it.
func jobInitImage(t *testing.T, ns, id string) string {
	t.Helper()
	job, err := kube.Client.BatchV1().Jobs(ns).Get(context.Background(), jobrunner.JobName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the Job of operation %s: %v", id, err)
	}
	return job.Spec.Template.Spec.InitContainers[0].Image
}
