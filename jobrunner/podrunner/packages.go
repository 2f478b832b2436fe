package podrunner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// packagesDir is where, under the work directory, packages are downloaded before they are unpacked.
const packagesDir = ".octo-packages"

// fetchPackages downloads each of the operation's packages from the dispatch server with the pod token
// (streamed to a file in the work directory, resumed after a broken connection), checks its SHA-256 and
// unpacks it into the work directory, in order. Any failure stops the operation before its script runs.
func (r *Runner) fetchPackages(ctx context.Context) error {
	if len(r.spec.Packages) == 0 {
		return nil
	}
	if r.spec.DispatchURL == "" || r.PodToken == "" {
		return errors.New("the operation has packages, but the pod has no channel to the dispatch server (no pod token or dispatch URL in its Secret): upgrade the worker and the server")
	}
	pod, err := client.NewPod(r.spec.DispatchURL, r.PodToken, client.Config{UserAgent: "octo-worker-runner"})
	if err != nil {
		return fmt.Errorf("packages: %w", err)
	}
	dl := filepath.Join(r.workDir, packagesDir)
	if err := os.MkdirAll(dl, 0o700); err != nil {
		return fmt.Errorf("packages: %w", err)
	}
	defer os.RemoveAll(dl)
	for _, p := range r.spec.Packages {
		file := filepath.Join(dl, p.SHA256)
		if err := download(ctx, pod, p, file); err != nil {
			return fmt.Errorf("package %s@%s (sha256:%s): %w", p.Name, p.Version, p.SHA256, err)
		}
		if err := Unpack(r.workDir, file, p.FileName); err != nil {
			return fmt.Errorf("package %s@%s (%s): unpacking: %w", p.Name, p.Version, p.FileName, err)
		}
		r.line(logline.Stderr, fmt.Appendf(nil, "octo-worker runner: package %s@%s (%s, sha256 verified) placed in the work directory", p.Name, p.Version, p.FileName), true)
	}
	return nil
}

// download streams one package into file and checks its SHA-256.
func download(ctx context.Context, pod *client.Pod, p api.Package, file string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	err = pod.DownloadPackage(ctx, p.SHA256, p.Size, io.MultiWriter(f, h))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("downloading: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return fmt.Errorf("the downloaded bytes hash to sha256:%s, not the package's: nothing was run; push the package again, or look for a proxy that alters downloads", got)
	}
	return nil
}
