package cluster_test

import (
	"os"
	"testing"

	"github.com/octo-worker/octo-worker/e2e/cluster"
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
	cluster.RunTests(m, cluster.Options{
		Images: map[string]cluster.Image{
			probeImage: {Files: map[string]string{"/usr/local/bin/incluster-probe": self}},
		},
	}, func(c *cluster.Cluster) { kube = c })
}
