package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// findBinDir resolves Options.BinDir: the option, $OCTO_KUBE_BIN, or scripts/build-kube.sh's output.
func findBinDir(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("OCTO_KUBE_BIN")
	}
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("finding the Kubernetes binaries: set cluster.Options.BinDir or OCTO_KUBE_BIN, or run from inside the octo-worker module: %w", err)
		}
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "build-kube.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("running scripts/build-kube.sh: %w", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		dir = lines[len(lines)-1]
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("kube binaries directory %s has no %s (run scripts/build-kube.sh): %w", dir, b, err)
		}
	}
	return dir, nil
}

// moduleRoot walks up from the working directory to the octo-worker module's go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			sc.Scan()
			f.Close()
			if strings.TrimSpace(sc.Text()) == "module github.com/octo-worker/octo-worker" {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/octo-worker/octo-worker above the working directory")
		}
		dir = parent
	}
}
