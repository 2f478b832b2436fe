package kubelet

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Container log rotation, as the kubelet's container log manager does it (k8s.io/kubernetes
// pkg/kubelet/logs/container_log_manager.go): every monitor interval, the log of each running container
// whose current file has reached the maximum size is rotated. Rotation removes leftovers of a failed
// rotation, deletes the oldest rotated files so that at most maxFiles-2 remain, gzips those still plain,
// renames the current file to <path>.<YYYYMMDD-hhmmss> (local time, the kubelet's timestampFormat) and
// opens a new current file (the runtime's ReopenContainerLog).
const (
	// DefaultContainerLogMaxSize, DefaultContainerLogMaxFiles and DefaultContainerLogMonitorInterval are
	// the kubelet's defaults (KubeletConfiguration containerLogMaxSize, containerLogMaxFiles,
	// containerLogMonitorInterval).
	DefaultContainerLogMaxSize         = "10Mi"
	DefaultContainerLogMaxFiles        = 5
	DefaultContainerLogMonitorInterval = 10 * time.Second

	rotatedTimeFormat = "20060102-150405"
	gzSuffix          = ".gz"
	tmpSuffix         = ".tmp"
)

// rotationPolicy is a validated rotation configuration.
type rotationPolicy struct {
	maxSize  int64 // bytes; negative: rotation off
	maxFiles int
	interval time.Duration
}

// ValidateLogRotation checks container log rotation settings as New does, with zero values meaning the
// kubelet's defaults; errors name the field (ContainerLogMaxSize, ContainerLogMaxFiles,
// ContainerLogMonitorInterval).
func ValidateLogRotation(maxSize string, maxFiles int, interval time.Duration) error {
	_, err := newRotationPolicy(maxSize, maxFiles, interval)
	return err
}

func newRotationPolicy(maxSize string, maxFiles int, interval time.Duration) (rotationPolicy, error) {
	if maxSize == "" {
		maxSize = DefaultContainerLogMaxSize
	}
	if maxFiles == 0 {
		maxFiles = DefaultContainerLogMaxFiles
	}
	if interval == 0 {
		interval = DefaultContainerLogMonitorInterval
	}
	q, err := resource.ParseQuantity(maxSize)
	if err != nil {
		return rotationPolicy{}, fmt.Errorf("ContainerLogMaxSize %q: %w (use a quantity such as \"10Mi\", or \"-1\" to turn rotation off)", maxSize, err)
	}
	size, ok := q.AsInt64()
	if !ok || size == 0 {
		return rotationPolicy{}, fmt.Errorf("ContainerLogMaxSize %q: use a positive whole number of bytes such as \"10Mi\", or \"-1\" to turn rotation off", maxSize)
	}
	if maxFiles < 2 {
		return rotationPolicy{}, fmt.Errorf("ContainerLogMaxFiles is %d: use 2 or more, as the kubelet requires (the current file and one rotated file)", maxFiles)
	}
	if interval < 0 {
		return rotationPolicy{}, fmt.Errorf("ContainerLogMonitorInterval is %s: use a positive duration (the kubelet's default is 10s)", interval)
	}
	return rotationPolicy{maxSize: size, maxFiles: maxFiles, interval: interval}, nil
}

// rotateLogs checks the logs of running containers every interval until ctx ends.
func (n *Node) rotateLogs(ctx context.Context) {
	if n.rotation.maxSize < 0 {
		return
	}
	t := time.NewTicker(n.rotation.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, l := range n.currentLogs() {
			if err := l.rotate(n.rotation); err != nil {
				n.log.WithError(err).Warn("rotating container log")
			}
		}
	}
}

// currentLogs returns the log of each container's current run.
func (n *Node) currentLogs() []*containerLog {
	n.mu.Lock()
	workers := make([]*podWorker, 0, len(n.workers))
	for _, w := range n.workers {
		workers = append(workers, w)
	}
	n.mu.Unlock()
	var logs []*containerLog
	for _, w := range workers {
		w.mu.Lock()
		for _, c := range append(append([]*ctrState{}, w.st.init...), w.st.ctrs...) {
			if len(c.logs) > 0 {
				logs = append(logs, c.logs[len(c.logs)-1])
			}
		}
		w.mu.Unlock()
	}
	return logs
}

// rotate is one check of the log under policy p: it rotates the current file when the container's output is
// still open and the file has reached p.maxSize.
func (l *containerLog) rotate(p rotationPolicy) error {
	if !l.running() {
		// As the kubelet: a container that no longer writes keeps its last file as the current one.
		return nil
	}
	st, err := os.Stat(l.path)
	if err != nil {
		return fmt.Errorf("checking container log size: %w", err)
	}
	if st.Size() < p.maxSize {
		return nil
	}
	rotated, err := l.rotatedFiles()
	if err != nil {
		return err
	}
	// Keep maxFiles-2 rotated files: with the file rotated now and the new current one, that is maxFiles.
	keep := p.maxFiles - 2
	for len(rotated) > keep {
		if err := os.Remove(rotated[0]); err != nil {
			return fmt.Errorf("removing old container log: %w", err)
		}
		rotated = rotated[1:]
	}
	for _, r := range rotated {
		if !strings.HasSuffix(r, gzSuffix) {
			if err := compress(r); err != nil {
				return err
			}
		}
	}
	return l.rotateCurrent()
}

func (l *containerLog) running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.streams > 0
}

// rotatedFiles removes leftovers of an interrupted compression (a .tmp file, or a plain file whose .gz
// exists) and returns the rotated files, oldest first.
func (l *containerLog) rotatedFiles() ([]string, error) {
	dir, prefix := filepath.Dir(l.path), filepath.Base(l.path)+"."
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing rotated container logs: %w", err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names[e.Name()] = true
		}
	}
	var rotated []string
	for name := range names {
		if strings.HasSuffix(name, tmpSuffix) || names[name+gzSuffix] {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("removing unused container log: %w", err)
			}
			continue
		}
		rotated = append(rotated, filepath.Join(dir, name))
	}
	sort.Strings(rotated)
	return rotated, nil
}

// compress replaces path by path.gz.
func compress(path string) (err error) {
	src, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("compressing container log: %w", err)
	}
	defer src.Close()
	tmp := path + tmpSuffix
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compressing container log: %w", err)
	}
	defer func() {
		if err != nil {
			dst.Close()
			os.Remove(tmp)
		}
	}()
	zw := gzip.NewWriter(dst)
	if _, err := io.Copy(zw, src); err != nil {
		return fmt.Errorf("compressing container log %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compressing container log %s: %w", path, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("compressing container log %s: %w", path, err)
	}
	if err := os.Rename(tmp, path+gzSuffix); err != nil {
		return fmt.Errorf("compressing container log: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing compressed container log: %w", err)
	}
	return nil
}

// rotateCurrent renames the current file to its rotated name and continues in a new file, waking followers
// so that they finish the old file and go on in the new one.
func (l *containerLog) rotateCurrent() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams == 0 {
		return nil // the output ended while older files were compressed
	}
	// The kubelet's name has whole seconds; its monitor interval (3 s at least) never rotates twice in one
	// second, but a test's shorter interval may: the name then takes the next free second, so names stay
	// unique and sort oldest first.
	stamp := l.now().Truncate(time.Second)
	if !stamp.After(l.lastRotation) {
		stamp = l.lastRotation.Add(time.Second)
	}
	rotated := l.path + "." + stamp.Format(rotatedTimeFormat)
	if err := os.Rename(l.path, rotated); err != nil {
		return fmt.Errorf("rotating container log: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		// As the kubelet: rename it back so that the next check tries again.
		err = fmt.Errorf("reopening container log: %w", err)
		if rerr := os.Rename(rotated, l.path); rerr != nil {
			err = errors.Join(err, fmt.Errorf("renaming the rotated log back: %w", rerr))
		}
		return err
	}
	_ = l.f.Close()
	l.f = f
	l.gen++
	l.lastRotation = stamp
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}
