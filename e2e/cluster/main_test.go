package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/octo-worker/octo-worker/e2e/cluster"
	"go.uber.org/goleak"
)

// kube is the cluster every test of this package shares.
var kube *cluster.Cluster

func TestMain(m *testing.M) {
	if os.Getenv(inClusterProbeEnv) != "" {
		// This test binary is also the in-cluster client that TestServiceAccountInCluster runs in a pod.
		os.Exit(inClusterProbe())
	}
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	images := map[string]cluster.Image{
		probeImage: {Files: map[string]string{"/usr/local/bin/incluster-probe": self}},
	}
	// An image with its own (empty) root and one static binary: the kube-scheduler built by build-kube.sh.
	if bin := os.Getenv("OCTO_KUBE_BIN"); bin != "" {
		if scratchRoot, err = os.MkdirTemp("", "octo-e2e-root-"); err != nil {
			panic(err)
		}
		images[scratchImage] = cluster.Image{Root: scratchRoot, Files: map[string]string{"/bin/kube-scheduler": filepath.Join(bin, "kube-scheduler")}}
	}
	before := goleak.IgnoreCurrent()
	code := cluster.Run(m, cluster.Options{Images: images}, func(c *cluster.Cluster) { kube = c })
	if scratchRoot != "" {
		os.RemoveAll(scratchRoot)
	}
	// Once the cluster is stopped, none of its goroutines (nodes, pod workers, log followers, component
	// watchers) may remain.
	if code == 0 {
		if err := goleak.Find(before, goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left after the cluster stopped: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// scratchRoot is the root directory of scratchImage ("" when OCTO_KUBE_BIN is not set).
var scratchRoot string

const scratchImage = "scratch-root:e2e"
