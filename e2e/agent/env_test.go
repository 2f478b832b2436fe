package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/e2e/proc"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// env is one test's world: a namespace (Pod Security restricted), a dispatch server on SQLite, and a worker
// agent process for the pool "e2e".
type env struct {
	t          testing.TB
	ns         string
	dir        string
	serverPort int
	adminToken string
	server     *proc.Proc
	admin      *client.Client
	regToken   string
	agentOpts  agentOptions
	agent      *proc.Proc
	healthPort int
}

type agentOptions struct {
	values string        // extra values YAML, merged over the test defaults
	sweep  time.Duration // sweep interval (default: the agent's)
	flags  []string      // extra agent flags
	// ownBinary runs the agent from a private copy of the binary, as in its pod, where no other process maps
	// the same file (the dispatch server here runs from the shared one).
	ownBinary   bool
	kubeconfig  string   // the agent's kubeconfig (default: the cluster's)
	env         []string // extra environment of the agent
	serverFlags []string // extra flags of the dispatch server
}

const pool = "e2e"

func setup(t testing.TB, o agentOptions) *env { return setupWith(t, o, true) }

// setupWith is setup; when ready is false it does not wait for the agent to be ready.
func setupWith(t testing.TB, o agentOptions, ready bool) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), agentOpts: o, adminToken: fmt.Sprintf("admin-token-%d", time.Now().UnixNano())}
	e.ns = kube.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	e.serverPort = proc.FreePort(t)
	e.startServer()
	admin, err := client.New(client.Config{Server: e.serverURL(), Token: e.adminToken})
	if err != nil {
		t.Fatal(err)
	}
	e.admin = admin
	ctx := context.Background()
	if _, err := e.admin.CreatePool(ctx, pool, "end-to-end tests"); err != nil {
		t.Fatalf("creating pool: %v", err)
	}
	tok, err := e.admin.CreateToken(ctx, []string{pool}, time.Hour)
	if err != nil {
		t.Fatalf("creating registration token: %v", err)
	}
	e.regToken = tok.Token
	e.healthPort = proc.FreePort(t)
	if !ready {
		e.launchAgent()
		return e
	}
	e.startAgent()
	return e
}

func (e *env) serverURL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.serverPort) }

func (e *env) metricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", e.healthPort) }

func (e *env) startServer() {
	args := append([]string{"server",
		"--listen", fmt.Sprintf("127.0.0.1:%d", e.serverPort),
		"--db", filepath.Join(e.dir, "octo-worker.db"),
		"--admin-token", e.adminToken}, e.agentOpts.serverFlags...)
	e.server = proc.Start(e.t, binary, "server", nil, args...)
	e.server.WaitHTTP(e.t, e.serverURL()+"/healthz", time.Minute)
}

// restartServer starts the server again on the same database and port.
func (e *env) restartServer() { e.startServer() }

func (e *env) startAgent() {
	e.launchAgent()
	e.agent.WaitHTTP(e.t, fmt.Sprintf("http://127.0.0.1:%d/readyz", e.healthPort), 2*time.Minute)
}

// launchAgent starts the agent process and returns at once.
func (e *env) launchAgent() {
	values := filepath.Join(e.dir, "values.yaml")
	if err := os.WriteFile(values, []byte(fmt.Sprintf(`
worker:
  serverUrl: %s
  pools: [%s]
  heartbeatInterval: 1s
image:
  repository: octo-worker
  tag: e2e
scriptPods:
  worker:
    image:
      repository: octo-tools
      tag: e2e
`, e.serverURL(), pool)), 0o644); err != nil {
		e.t.Fatal(err)
	}
	args := []string{"--log-format", "text", "--log-level", "debug", "agent",
		"--values", values,
		"--kubeconfig", cmp.Or(e.agentOpts.kubeconfig, kube.Kubeconfig),
		"--namespace", e.ns,
		"--release", "e2e-worker",
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", e.healthPort)}
	if e.agentOpts.values != "" {
		extra := filepath.Join(e.dir, "values-test.yaml")
		if err := os.WriteFile(extra, []byte(e.agentOpts.values), 0o644); err != nil {
			e.t.Fatal(err)
		}
		args = append(args, "--values", extra)
	}
	if e.agentOpts.sweep > 0 {
		args = append(args, "--sweep-interval", e.agentOpts.sweep.String())
	}
	args = append(args, e.agentOpts.flags...)
	exe := binary
	if e.agentOpts.ownBinary {
		exe = filepath.Join(e.dir, "octo-worker-agent")
		if _, err := os.Stat(exe); err != nil {
			copyFile(e.t, binary, exe)
		}
	}
	e.agent = proc.Start(e.t, exe, "agent", append([]string{"OCTO_REGISTRATION_TOKEN=" + e.regToken}, e.agentOpts.env...), args...)
}

// restartAgent starts the agent again (same namespace, so the same identity Secret).
func (e *env) restartAgent() { e.startAgent() }

// workerID reads the worker's id from its identity Secret.
func (e *env) workerID() string {
	s, err := kube.Client.CoreV1().Secrets(e.ns).Get(context.Background(), "e2e-worker-identity", metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("reading identity Secret: %v", err)
	}
	return string(s.Data["worker-id"])
}

func (e *env) trySubmit(spec api.OperationSpec) error {
	if spec.Pool == "" {
		spec.Pool = pool
	}
	_, err := e.admin.Submit(context.Background(), spec)
	return err
}

func (e *env) submit(spec api.OperationSpec) string {
	e.t.Helper()
	if spec.Pool == "" {
		spec.Pool = pool
	}
	op, err := e.admin.Submit(context.Background(), spec)
	if err != nil {
		e.t.Fatalf("submitting %q: %v", spec.Name, err)
	}
	return op.ID
}

func (e *env) get(id string) api.Operation {
	e.t.Helper()
	op, err := e.admin.Operation(context.Background(), id)
	if err != nil {
		e.t.Fatalf("getting operation %s: %v", id, err)
	}
	return op
}

func (e *env) wait(id string) api.Operation { return e.waitFor(id, 3*time.Minute) }

// waitFor follows the operation's log until its end record, then returns the operation.
func (e *env) waitFor(id string, timeout time.Duration) api.Operation {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		op := e.get(id)
		if op.State.Terminal() {
			return op
		}
		if ctx.Err() != nil {
			e.t.Fatalf("operation %s still %s after %s; log:\n%s", id, op.State, timeout, e.dump(id))
		}
		// A follow stream ends with the operation; it may also end early (server restart): re-check.
		_, _ = e.admin.Logs(ctx, id, client.LogsOptions{Follow: true}, func(api.LogLine) error { return nil })
		if ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// waitLog waits until a stored line of the operation contains text.
func (e *env) waitLog(id, text string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	found := errors.New("found")
	_, err := e.admin.Logs(ctx, id, client.LogsOptions{Follow: true}, func(l api.LogLine) error {
		if strings.Contains(l.Text, text) {
			return found
		}
		return nil
	})
	if !errors.Is(err, found) {
		e.t.Fatalf("operation %s never logged %q (%v); log:\n%s", id, text, err, e.dump(id))
	}
}

// logs returns every stored line of the operation.
func (e *env) logs(id string) []api.LogLine {
	e.t.Helper()
	var lines []api.LogLine
	_, err := e.admin.Logs(context.Background(), id, client.LogsOptions{}, func(l api.LogLine) error {
		lines = append(lines, l)
		return nil
	})
	if err != nil {
		e.t.Fatalf("reading log of %s: %v", id, err)
	}
	return lines
}

func (e *env) dump(id string) string {
	var lines []api.LogLine
	if _, err := e.admin.Logs(context.Background(), id, client.LogsOptions{}, func(l api.LogLine) error {
		lines = append(lines, l)
		return nil
	}); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for i, l := range lines {
		if i > 40 && i < len(lines)-20 {
			continue
		}
		fmt.Fprintf(&b, "%6d %-6s %s\n", l.Seq, l.Stream, l.Text)
	}
	return b.String()
}

func (e *env) cancel(id string) {
	e.t.Helper()
	if _, err := e.admin.Cancel(context.Background(), id); err != nil {
		e.t.Fatalf("cancelling %s: %v", id, err)
	}
}

// pod returns the operation's pod.
func (e *env) pod(id string) *corev1.Pod {
	e.t.Helper()
	pods, err := kube.Client.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: jobrunner.LabelOperation + "=" + jobrunner.LabelValue(id)})
	if err != nil || len(pods.Items) == 0 {
		e.t.Fatalf("no pod for operation %s (%v)", id, err)
	}
	return &pods.Items[len(pods.Items)-1]
}

// waitGone waits until the operation's Job and Secret no longer exist.
func (e *env) waitGone(id string) {
	e.t.Helper()
	name := jobrunner.JobName(id)
	waitUntil(e.t, 2*time.Minute, "Job and Secret "+name+" to be deleted", func() bool {
		_, jerr := kube.Client.BatchV1().Jobs(e.ns).Get(context.Background(), name, metav1.GetOptions{})
		_, serr := kube.Client.CoreV1().Secrets(e.ns).Get(context.Background(), name, metav1.GetOptions{})
		return isNotFound(jerr) && isNotFound(serr)
	})
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	// Written back, like a file of an image layer: the kernel cannot reclaim dirty pages of a mapped file.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
