package chart

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/e2e/kubelet"
)

// kube is the cluster every test of this package shares; binary is the octo-worker binary of version A, and
// binaries holds one per version the process nodes map to a worker image.
var (
	kube     *cluster.Cluster
	binary   string
	binaries = map[string]string{}
	gatesDir string // bound into the tools image as /etc/octo-gates (see gate)
)

// Worker images the process nodes know: octo-worker:A (the embedded chart's appVersion) and octo-worker:B, each
// the binary built with that version, so a worker reports the version of the image it runs. Image tags ending
// in "-missing" fail to pull, like an image that was never pushed. Scripts run in toolsImage.
const (
	imageRepo     = "octo-worker"
	versionA      = "0.1.0"
	versionB      = "0.2.0"
	toolsRepo     = "octo-tools"
	toolsTag      = "e2e"
	toolsMarker   = "tools image"
	missingSuffix = "-missing"
	gatesMount    = "/etc/octo-gates"
)

func TestMain(m *testing.M) {
	// A fixed build directory, overwritten by each run: cluster.RunTests exits, so nothing could remove a
	// fresh temporary one afterwards.
	dir := filepath.Join(os.TempDir(), "octo-worker-e2e-chart")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		panic(err)
	}
	images := map[string]cluster.Image{}
	for _, v := range []string{versionA, versionB} {
		b, err := buildBinary(dir, v)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binaries[v] = b
		images[imageRepo+":"+v] = cluster.Image{Files: map[string]string{"/usr/local/bin/octo-worker": b}}
	}
	binary = binaries[versionA]
	marker := filepath.Join(dir, "tools-image")
	if err := os.WriteFile(marker, []byte(toolsMarker+"\n"), 0o644); err != nil {
		panic(err)
	}
	// Gates of an earlier run must not open this run's scripts.
	gatesDir = filepath.Join(dir, "gates")
	if err := os.RemoveAll(gatesDir); err != nil {
		panic(err)
	}
	if err := os.MkdirAll(gatesDir, 0o755); err != nil {
		panic(err)
	}
	images[toolsRepo+":"+toolsTag] = cluster.Image{Files: map[string]string{"/etc/octo-image": marker, gatesMount: gatesDir}}
	cluster.RunTests(m, cluster.Options{
		Node:                cluster.NodeOptions{CPU: "16", Memory: "32Gi"},
		Images:              images,
		PullFailurePatterns: append([]string{imageRepo + ":*" + missingSuffix}, kubelet.DefaultPullFailurePatterns...),
	}, func(c *cluster.Cluster) { kube = c })
}

// buildBinary builds the octo-worker binary reporting version v into dir (CGO_ENABLED=0, as released). It
// does not use $OCTO_BINARY: the tests need two binaries that differ in their version. After the first, a
// build only links again.
func buildBinary(dir, v string) (string, error) {
	out := filepath.Join(dir, "octo-worker-"+v)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+v, "-o", out,
		"github.com/octo-worker/octo-worker/cmd/octo-worker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building octo-worker %s: %v\n%s", v, err, b)
	}
	return out, nil
}
