package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/jobrunner"
)


type memDispatch struct {
	mu      sync.Mutex
	queue   []api.Lease
	held    map[string]api.Lease
	logs    map[string][]api.LogLine
	results map[string]api.ResultRequest
	done    chan string
	cancel  []string
}

func (m *memDispatch) Lease(ctx context.Context, wait time.Duration) (*api.Lease, error) {
	m.mu.Lock()
	if len(m.queue) > 0 {
		l := m.queue[0]
		m.queue = m.queue[1:]
		m.held[l.Operation.ID] = l
		m.mu.Unlock()
		return &l, nil
	}
	m.mu.Unlock()
	select {
	case <-time.After(200 * time.Millisecond):
	case <-ctx.Done():
	}
	return nil, nil
}
func (m *memDispatch) Leases(ctx context.Context) ([]api.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Lease
	for _, l := range m.held {
		out = append(out, l)
	}
	return out, nil
}
func (m *memDispatch) Status(ctx context.Context, id string, req api.StatusRequest) error { return nil }
func (m *memDispatch) AppendLogs(ctx context.Context, id string, req api.AppendLogsRequest) (api.AppendLogsResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.logs[id] = append(m.logs[id], req.Lines...)
	var last int64
	for _, l := range m.logs[id] {
		if l.Seq > last {
			last = l.Seq
		}
	}
	return api.AppendLogsResponse{LastSeq: last}, nil
}
func (m *memDispatch) Result(ctx context.Context, id string, req api.ResultRequest) error {
	m.mu.Lock()
	m.results[id] = req
	delete(m.held, id)
	m.mu.Unlock()
	m.done <- id
	return nil
}
func (m *memDispatch) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return api.HeartbeatResponse{Cancel: m.cancel}, nil
}

func TestScratch(t *testing.T) {
	ns := kube.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	d := &memDispatch{held: map[string]api.Lease{}, logs: map[string][]api.LogLine{}, results: map[string]api.ResultRequest{}, done: make(chan string, 10)}
	d.queue = []api.Lease{
		{LeaseID: "l5", Operation: api.Operation{ID: "op-timeout", OperationSpec: api.OperationSpec{Pool: "p", Script: "echo start; sleep 60", TimeoutSeconds: 3}}},
		{LeaseID: "l6", Operation: api.Operation{ID: "op-cancel", OperationSpec: api.OperationSpec{Pool: "p", Script: "echo start; sleep 60"}}},
		{LeaseID: "l7", Operation: api.Operation{ID: "op-big", OperationSpec: api.OperationSpec{Pool: "p", Script: "seq 1 200000"}}},
		{LeaseID: "l8", Operation: api.Operation{ID: "op-pending", OperationSpec: api.OperationSpec{Pool: "p", Script: "echo fits", Requests: &api.Resources{CPU: "100"}}}},
		{LeaseID: "l1", Operation: api.Operation{ID: "op-ok", OperationSpec: api.OperationSpec{Pool: "p", Script: "echo hello; echo err >&2; id -u; cat /etc/hostname || true"}}},
		{LeaseID: "l2", Operation: api.Operation{ID: "op-fail", OperationSpec: api.OperationSpec{Pool: "p", Script: "echo bye; exit 3"}}},
		{LeaseID: "l3", Operation: api.Operation{ID: "op-badimg", OperationSpec: api.OperationSpec{Pool: "p", Script: "true", Image: "pull-fails.invalid/x:1"}}},
		{LeaseID: "l4", Operation: api.Operation{ID: "op-invalid", OperationSpec: api.OperationSpec{Pool: "p", Script: "true", Image: "UPPER/Case::bad"}}},
	}
	cfg := jobrunner.Defaults()
	cfg.Namespace = ns
	cfg.WorkerName = "w"
	cfg.Pools = []string{"p"}
	cfg.WorkerImage = "octo-worker:e2e"
	cfg.ToolsImage = "octo-tools:e2e"
	cfg.ImagePullGrace = 3 * time.Second
	cfg.MaxRequests = nil
	cfg.HeartbeatInterval = time.Second
	cfg.MaxRequests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200")}
	log := logrus.New()
	log.SetLevel(logrus.InfoLevel)
	a, err := jobrunner.New(cfg, jobrunner.Deps{Kube: kube.Client, Dispatcher: d, WorkerID: "w1", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- a.Run(ctx) }()
	go func() {
		time.Sleep(5 * time.Second)
		d.mu.Lock()
		d.cancel = []string{"op-cancel"}
		d.mu.Unlock()
		time.Sleep(5 * time.Second)
		if _, err := kube.AddNode(context.Background(), cluster.NodeOptions{CPU: "128", Memory: "64Gi"}); err != nil {
			t.Error(err)
		}
	}()
	for i := 0; i < 8; i++ {
		select {
		case id := <-d.done:
			d.mu.Lock()
			t.Logf("%s: %+v", id, d.results[id])
			for j, l := range d.logs[id] {
				if j < 12 || j > len(d.logs[id])-5 {
					t.Logf("   %d %s %s", l.Seq, l.Stream, l.Text)
				}
			}
			if id == "op-big" {
				var n int64
				for _, l := range d.logs[id] {
					if l.Seq == n+1 {
						n++
					} else if l.Seq != 0 {
						t.Errorf("out of order: %d after %d", l.Seq, n)
					}
				}
				t.Logf("big: %d lines", n)
			}
			d.mu.Unlock()
		case <-time.After(2 * time.Minute):
			t.Fatal("timeout")
		}
	}
	cancel()
	<-errc
}
