package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner"
)

// The worker dies after a cancel, once the Job is deleted but before the server has the result. The test
// makes that happen deterministically: it kills the agent, cancels, deletes the Job, and starts the agent
// again. The restarted agent finds no Job for an operation whose lease says a cancel was requested: the
// operation is cancelled, not failed with an unknown result.
func TestCancelledJobGoneWhileTheWorkerWasAway(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	id := e.submit(api.OperationSpec{Script: "echo started\nsleep 300"})
	e.waitLog(id, "started")
	_ = e.agent.Stop(syscall.SIGKILL, time.Second)
	e.cancel(id)
	fg := metav1.DeletePropagationForeground
	if err := kube.Client.BatchV1().Jobs(e.ns).Delete(context.Background(), jobrunner.JobName(id), metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		t.Fatalf("deleting the Job: %v", err)
	}
	e.waitGone(id)
	e.restartAgent()
	if op := e.wait(id); op.State != api.StateCancelled {
		t.Fatalf("state %s (%s), want cancelled", op.State, op.Message)
	}
}

// The "cancel requested" line reaches the server before the worker deletes the Job: a worker killed the moment
// the deletion shows leaves a log that says why the script stopped. The restarted worker then reports the
// operation cancelled.
func TestCancelLineStoredBeforeTheJobIsDeleted(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	id := e.submit(api.OperationSpec{Script: "echo started\nsleep 300"})
	e.waitLog(id, "started")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w, err := kube.Client.BatchV1().Jobs(e.ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", jobrunner.JobName(id)).String()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	e.cancel(id)
	for deleting := false; !deleting; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the watch of the Job ended before its deletion showed")
			}
			job, _ := ev.Object.(*batchv1.Job)
			deleting = ev.Type == watch.Deleted || (job != nil && job.DeletionTimestamp != nil)
		case <-ctx.Done():
			t.Fatal("the Job was not deleted after the cancel")
		}
	}
	_ = e.agent.Stop(syscall.SIGKILL, time.Second) // the worker dies the moment the deletion shows
	if !strings.Contains(systemText(e.logs(id)), "cancel requested") {
		t.Fatalf("the Job is being deleted but the log lacks the \"cancel requested\" line:\n%s", e.dump(id))
	}
	e.restartAgent()
	if op := e.wait(id); op.State != api.StateCancelled {
		t.Fatalf("state %s (%s), want cancelled", op.State, op.Message)
	}
	if n := strings.Count(systemText(e.logs(id)), "cancel requested"); n != 1 {
		t.Errorf("%d \"cancel requested\" lines, want one:\n%s", n, e.dump(id))
	}
}

// The agent starts while the Kubernetes API server cannot be reached (its kubeconfig goes through a proxy the
// test closes). It stays up with the identity mounted from its Secret, is shown unhealthy with the reason, and
// keeps the lease of the operation it ran for more than twice the lease TTL; once the API server can be reached
// again it re-adopts the Job, and the operation succeeds with every line once.
func TestAgentStartsWhileTheAPIServerIsUnreachable(t *testing.T) {
	t.Parallel()
	const ttl = 8 * time.Second
	proxy := startProxy(t, strings.TrimPrefix(kube.APIServerURL, "https://"))
	identity := t.TempDir()
	e := setup(t, agentOptions{
		kubeconfig:  proxiedKubeconfig(t, proxy.addr),
		env:         []string{"OCTO_IDENTITY_DIR=" + identity},
		serverFlags: []string{"--lease-ttl", ttl.String(), "--heartbeat-interval", "1s"},
	})
	// The kubelet mounts the identity Secret as files.
	sec, err := kube.Client.CoreV1().Secrets(e.ns).Get(context.Background(), "e2e-worker-identity", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range sec.Data {
		if err := os.WriteFile(filepath.Join(identity, k), v, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const n = 40
	id := e.submit(api.OperationSpec{Script: fmt.Sprintf("for i in $(seq 1 %d); do echo line $i; sleep 1; done", n)})
	e.waitLog(id, "line 2")

	_ = e.agent.Stop(syscall.SIGKILL, time.Second)
	proxy.close()
	stopped := time.Now()
	e.launchAgent()
	for {
		if e.agent.Exited() {
			t.Fatalf("the agent exited while the API server was unreachable:\n%s", e.agent.Tail(20))
		}
		if op := e.get(id); op.State != api.StateRunning {
			t.Fatalf("the operation is %s (%s) while the agent waits for the API server; want running", op.State, op.Message)
		}
		if time.Since(stopped) > 2*ttl+ttl/2 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	ws, err := e.admin.Workers(context.Background())
	if err != nil || len(ws) != 1 {
		t.Fatalf("workers: %v %v", ws, err)
	}
	if w := ws[0]; w.Healthy || !strings.HasPrefix(w.HealthMessage, "waiting for the Kubernetes API server: ") || w.Running != 1 {
		t.Fatalf("the server sees the worker healthy %v, running %d: %q; want unhealthy with the reason, keeping its operation", w.Healthy, w.Running, w.HealthMessage)
	}

	proxy.reopen(t)
	op := e.waitFor(id, 5*time.Minute)
	if op.State != api.StateSucceeded {
		t.Fatalf("state %s (%s), want succeeded; log:\n%s", op.State, op.Message, e.dump(id))
	}
	for i, l := range checkLines(t, e.logs(id), n) {
		if l.Text != fmt.Sprintf("line %d", i+1) {
			t.Fatalf("line %d is %q", i+1, l.Text)
		}
	}
	ws, err = e.admin.Workers(context.Background())
	if err != nil || len(ws) != 1 || !ws[0].Healthy {
		t.Errorf("after the API server came back the server sees %+v (%v); want the worker healthy", ws, err)
	}
}

// The worker cannot reach the API server when it creates an operation's Secret and Job (the API server
// restarts, say): the operation waits, its log saying why, instead of failing, and runs once the API server is
// back.
func TestObjectsCreatedOnceTheAPIServerIsBack(t *testing.T) {
	t.Parallel()
	proxy := startProxy(t, strings.TrimPrefix(kube.APIServerURL, "https://"))
	e := setup(t, agentOptions{kubeconfig: proxiedKubeconfig(t, proxy.addr)})
	proxy.close()
	id := e.submit(api.OperationSpec{Script: "echo line 1; echo line 2"})
	e.waitLog(id, "waiting for the Kubernetes API server to create Secret")
	proxy.reopen(t)
	if op := e.wait(id); op.State != api.StateSucceeded {
		t.Fatalf("state %s (%s), want succeeded; log:\n%s", op.State, op.Message, e.dump(id))
	}
	checkLines(t, e.logs(id), 2)
}

// proxiedKubeconfig writes a copy of the cluster's kubeconfig whose server is addr (a proxy of the API server's
// port on loopback, so the server's certificate still fits) and returns its path.
func proxiedKubeconfig(t *testing.T, addr string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = addr
		c.Server = u.String()
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// tcpProxy forwards connections on a loopback port to its upstreams until closed; reopen listens on the same
// port again. With several upstreams it is a load balancer: each connection goes to the next upstream that
// accepts it, so connections spread over them and skip one that is down.
type tcpProxy struct {
	addr      string
	upstreams []string
	next      int

	// lose, when set, says whether to lose the reply the upstream starts sending now: both connections close
	// instead, as when a load balancer's connection breaks after the server acted on the request.
	lose atomic.Pointer[func() bool]

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, upstreams ...string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: ln.Addr().String(), upstreams: upstreams, conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(func() { p.close(); p.wg.Wait() })
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := p.dial()
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, up) {
				return
			}
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); p.copyReplies(c, up); c.Close() }()
		}
	}()
}

// copyReplies copies what the upstream sends to the client until either side closes, or until lose says to
// lose a reply.
func (p *tcpProxy) copyReplies(c, up net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if lose := p.lose.Load(); lose != nil && (*lose)() {
				up.Close()
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// dial connects to the first upstream that accepts, starting after the one the previous connection took.
func (p *tcpProxy) dial() (net.Conn, error) {
	p.mu.Lock()
	first := p.next
	p.next++
	p.mu.Unlock()
	var err error
	for i := range p.upstreams {
		var c net.Conn
		if c, err = net.Dial("tcp", p.upstreams[(first+i)%len(p.upstreams)]); err == nil {
			return c, nil
		}
	}
	return nil, err
}

// track records a proxied pair of connections; false (both closed) when the proxy was closed meanwhile.
func (p *tcpProxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		c.Close()
		up.Close()
		return false
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	return true
}

// close stops listening and cuts every proxied connection: the API server is unreachable.
func (p *tcpProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// reopen listens on the same port again.
func (p *tcpProxy) reopen(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("reopening the proxy on %s: %v", p.addr, err)
	}
	p.serve(ln)
}
