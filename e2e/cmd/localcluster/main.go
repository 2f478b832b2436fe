// Command localcluster runs the local control plane (package e2e/cluster) until it receives SIGINT or
// SIGTERM. scripts/cluster-up.sh starts it in the background for `make cluster-up` and `make demo`; it writes
// DIR/kubeconfig (admin), DIR/pid, and DIR/ready once pods can run, and keeps component logs in DIR/logs.
//
//	localcluster --dir .cluster [--nodes 1] [--cpu 4] [--memory 8Gi] [--pods 110]
//	             [--image NAME=CONTAINER_PATH=HOST_FILE ...] [--pull-fails PATTERN ...] [--bin-dir DIR]
//	             [--container-log-max-size 10Mi] [--container-log-max-files 5]
//	             [--container-log-monitor-interval 10s]
//
// The nodes rotate container logs like a kubelet, with the kubelet's defaults; --container-log-max-size -1
// turns rotation off.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/octo-worker/octo-worker/e2e/cluster"
	"github.com/octo-worker/octo-worker/e2e/kubelet"
	"github.com/sirupsen/logrus"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		dir      = flag.String("dir", ".cluster", "directory for the cluster's files (kubeconfig, pid, ready, logs)")
		binDir   = flag.String("bin-dir", "", "directory with kube-apiserver, kube-controller-manager, kube-scheduler and etcd (default $OCTO_KUBE_BIN or scripts/build-kube.sh)")
		nodes    = flag.Int("nodes", 1, "number of process nodes")
		cpu      = flag.String("cpu", "4", "CPU of each node")
		memory   = flag.String("memory", "8Gi", "memory of each node")
		pods     = flag.Int("pods", 110, "pod capacity of each node")
		logSize  = flag.String("container-log-max-size", kubelet.DefaultContainerLogMaxSize, "size at which a running container's log file is rotated, as the kubelet's containerLogMaxSize (-1: no rotation)")
		logFiles = flag.Int("container-log-max-files", kubelet.DefaultContainerLogMaxFiles, "log files kept per container, the current one included, as the kubelet's containerLogMaxFiles (2 or more)")
		logCheck = flag.Duration("container-log-monitor-interval", kubelet.DefaultContainerLogMonitorInterval, "how often log sizes are checked, as the kubelet's containerLogMonitorInterval")
		images   listFlag
		failures listFlag
	)
	flag.Var(&images, "image", "NAME=CONTAINER_PATH=HOST_FILE: image NAME carries HOST_FILE at CONTAINER_PATH (repeatable)")
	flag.Var(&failures, "pull-fails", "image name pattern whose pull fails, * matches anything (repeatable; default pull-fails.invalid/*)")
	flag.Parse()

	log := logrus.New()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	entry := log.WithField("component", "localcluster")

	imgs, err := parseImages(images)
	if err != nil {
		return err
	}
	opts := cluster.Options{
		Nodes:   *nodes,
		Node:    cluster.NodeOptions{CPU: *cpu, Memory: *memory, Pods: *pods},
		Images:  imgs,
		BinDir:  *binDir,
		Dir:     *dir,
		KeepDir: true,
		Logger:  log,
	}
	opts.Node.ContainerLogMaxSize = *logSize
	opts.Node.ContainerLogMaxFiles = *logFiles
	opts.Node.ContainerLogMonitorInterval = *logCheck
	if len(failures) > 0 {
		opts.PullFailurePatterns = failures
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", *dir, err)
	}
	pidFile, readyFile := filepath.Join(*dir, "pid"), filepath.Join(*dir, "ready")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	c, err := cluster.Start(startCtx, opts)
	cancel()
	if err != nil {
		return fmt.Errorf("starting the cluster: %w", err)
	}
	entry.Infof("cluster ready in %s at %s; kubeconfig %s", time.Since(began).Round(time.Millisecond), c.APIServerURL, c.Kubeconfig)
	if err := os.WriteFile(readyFile, []byte(c.APIServerURL+"\n"), 0o644); err != nil {
		_ = c.Stop()
		return fmt.Errorf("writing ready file: %w", err)
	}
	<-ctx.Done()
	entry.Info("stopping")
	os.Remove(readyFile)
	return c.Stop()
}

// parseImages reads --image NAME=CONTAINER_PATH=HOST_FILE flags; several flags may name the same image.
func parseImages(flags []string) (map[string]cluster.Image, error) {
	imgs := map[string]cluster.Image{}
	for _, f := range flags {
		parts := strings.SplitN(f, "=", 3)
		if len(parts) != 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") || parts[2] == "" {
			return nil, fmt.Errorf("--image %q: use NAME=CONTAINER_PATH=HOST_FILE, e.g. octo-worker:e2e=/usr/local/bin/octo-worker=bin/octo-worker", f)
		}
		host, err := filepath.Abs(parts[2])
		if err != nil {
			return nil, fmt.Errorf("--image %q: %w", f, err)
		}
		if _, err := os.Stat(host); err != nil {
			return nil, fmt.Errorf("--image %q: %w", f, err)
		}
		img := imgs[parts[0]]
		if img.Files == nil {
			img.Files = map[string]string{}
		}
		if _, dup := img.Files[parts[1]]; dup {
			return nil, errors.New("--image " + f + ": " + parts[1] + " is given twice for " + parts[0])
		}
		img.Files[parts[1]] = host
		imgs[parts[0]] = img
	}
	return imgs, nil
}
