package chart

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/octo-worker/octo-worker/e2e/cluster"
)

// kube is the cluster every test of this package shares; binary is the octo-worker binary under test.
var (
	kube   *cluster.Cluster
	binary string
)

// Worker images the process nodes know: the chart's appVersion A and an upgrade target B, both the binary.
const (
	imageRepo = "octo-worker"
	versionA  = "0.1.0"
	versionB  = "0.2.0"
)

func TestMain(m *testing.M) {
	// A fixed build directory, overwritten by each run: cluster.RunTests exits, so nothing could remove a
	// fresh temporary one afterwards.
	dir := filepath.Join(os.TempDir(), "octo-worker-e2e-chart")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		panic(err)
	}
	var err error
	binary, err = buildBinary(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	images := map[string]cluster.Image{}
	for _, v := range []string{versionA, versionB} {
		images[imageRepo+":"+v] = cluster.Image{Files: map[string]string{"/usr/local/bin/octo-worker": binary}}
	}
	cluster.RunTests(m, cluster.Options{Images: images}, func(c *cluster.Cluster) { kube = c })
}

// buildBinary returns $OCTO_BINARY, or builds the binary into dir (CGO_ENABLED=0, as released).
func buildBinary(dir string) (string, error) {
	if b := os.Getenv("OCTO_BINARY"); b != "" {
		return b, nil
	}
	out := filepath.Join(dir, "octo-worker")
	cmd := exec.Command("go", "build", "-o", out, "github.com/octo-worker/octo-worker/cmd/octo-worker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building octo-worker: %v\n%s", err, b)
	}
	return out, nil
}
