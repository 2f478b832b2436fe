// Package agent holds the end-to-end tests and benchmarks of the worker agent: the real octo-worker binary
// runs the dispatch server and the agent as processes, against the local control plane (e2e/cluster), and
// every operation runs as a Job on the process node. Run with `go test ./e2e/agent/ -p 1`.
package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/octo-worker/octo-worker/e2e/cluster"
)

// Image names the tests use. The worker image carries the binary under test; the tools and step images are
// the host's root with a file saying which image a script runs in.
const (
	workerImage = "octo-worker:e2e"
	toolsImage  = "octo-tools:e2e"
	stepImage   = "octo-step:e2e"
)

var kube *cluster.Cluster

func TestMain(m *testing.M) {
	dir := filepath.Join(os.TempDir(), "octo-e2e-agent")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var err error
	if binary, err = buildBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	marker := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return p
	}
	cluster.RunTests(m, cluster.Options{
		// One large node: 200 concurrent script pods fit; a step asking for 100 CPUs does not (until a test
		// adds a node).
		Node: cluster.NodeOptions{CPU: "64", Memory: "256Gi", Pods: 300},
		Images: map[string]cluster.Image{
			workerImage: {Files: map[string]string{"/usr/local/bin/octo-worker": binary}},
			toolsImage:  {Files: map[string]string{"/etc/octo-image": marker("tools-image", "tools image")}},
			stepImage:   {Files: map[string]string{"/etc/octo-image": marker("step-image", "step image")}},
		},
	}, func(c *cluster.Cluster) { kube = c })
}
