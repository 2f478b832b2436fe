package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/e2e/cluster"
)

// No line lost to log rotation (issue 11): on a node that rotates container logs at 1Mi x 3, a step prints
// 50 MB of numbered lines while the worker, or the server, is stopped; the kubelet keeps only the last few
// MiB, and the pod pushes the rest itself. Every line is stored once, in order, and the exit code is the
// script's.
func TestNoLineLostToRotation(t *testing.T) {
	t.Parallel()
	for _, stopped := range []string{"worker", "server"} {
		t.Run(stopped+" stopped", func(t *testing.T) {
			t.Parallel()
			node, err := kube.AddNode(context.Background(), cluster.NodeOptions{ContainerLogMaxSize: "1Mi", ContainerLogMaxFiles: 3,
				ContainerLogMonitorInterval: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			e := setup(t, agentOptions{values: "scriptPods:\n  nodeSelector:\n    kubernetes.io/hostname: " + node + "\n"})
			const first, n = 1000, 101000 // 100,000 lines of 500 bytes in the middle
			pad := strings.Repeat("x", 490)
			id := e.submit(api.OperationSpec{Syntax: "sh", Script: fmt.Sprintf(`seq 1 %d | sed 's/.*/line & %s/'
until [ -e go ]; do sleep 0.05; done
seq %d %d | sed 's/.*/line & %s/'
touch done; exit 7`, first, pad, first+1, n, pad)})
			e.waitLog(id, fmt.Sprintf("line %d ", first))
			if stopped == "worker" {
				_ = e.agent.Stop(syscall.SIGKILL, time.Second)
			} else {
				e.server.Stop(syscall.SIGKILL, time.Second)
			}
			work := filepath.Join(kube.Dir, "nodes", node, "pods", string(e.pod(id).UID), "volumes", "octo-work")
			if err := os.WriteFile(filepath.Join(work, "go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 5*time.Minute, "the script's last line", func() bool { _, err := os.Stat(filepath.Join(work, "done")); return err == nil })
			if stopped == "worker" {
				e.restartAgent()
			} else {
				e.restartServer()
			}
			op := e.waitFor(id, 10*time.Minute)
			if op.State != api.StateFailed || op.ExitCode == nil || *op.ExitCode != 7 {
				t.Errorf("state %s, exit code %v (%s); want failed with the script's 7", op.State, deref(op.ExitCode), op.Message)
			}
			for i, l := range checkLines(t, e.logs(id), n) {
				if l.Text != fmt.Sprintf("line %d %s", i+1, pad) {
					t.Fatalf("line %d is %.20q...", i+1, l.Text)
				}
			}
		})
	}
}
