package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/octo-worker/octo-worker/e2e/kubelet"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Image is what an image name means on the process nodes (see kubelet.Image).
type Image = kubelet.Image

// Options configure a cluster. The zero value is a one-node cluster with default sizes.
type Options struct {
	// Nodes is the number of nodes started with the cluster (named node-1, node-2, ...). Default 1.
	Nodes int
	// Node sizes the initial nodes (its Name is ignored). Defaults: 4 CPU, 8Gi memory, 110 pods.
	Node NodeOptions
	// Images maps image names to root filesystems and files, on every node. Unknown valid names run on the
	// host's root.
	Images map[string]Image
	// PullFailurePatterns are image names whose pull always fails ("*" matches anything).
	// nil: kubelet.DefaultPullFailurePatterns (everything under the registry pull-fails.invalid/).
	PullFailurePatterns []string
	// BinDir holds kube-apiserver, kube-controller-manager, kube-scheduler and etcd. Default: $OCTO_KUBE_BIN,
	// else the output of scripts/build-kube.sh, found from the working directory up to the module root.
	BinDir string
	// Dir receives the cluster's files (certificates, kubeconfig, etcd data, logs, pod volumes). Default: a
	// new temporary directory, removed by Stop unless KeepDir is set.
	Dir string
	// KeepDir keeps Dir after Stop (it is always kept when Dir was given).
	KeepDir bool
	// Logs receives the components' output. nil: one file per component under Dir/logs.
	Logs io.Writer
	// Logger receives the cluster's and the nodes' own logs. nil: Dir/logs/nodes.log.
	Logger *logrus.Logger
}

// NodeOptions describe a node.
type NodeOptions struct {
	// Name of the Node. Default for AddNode: node-N.
	Name string
	// CPU and Memory are quantities ("4", "500m", "8Gi"). Defaults: "4" and "8Gi".
	CPU    string
	Memory string
	// Pods is the node's pod capacity. Default 110.
	Pods int
	// ContainerLogMaxSize, ContainerLogMaxFiles and ContainerLogMonitorInterval rotate the node's container
	// logs like a kubelet (kubelet.Config). Defaults, the kubelet's: "10Mi", 5 files, checked every 10s;
	// "-1" turns rotation off.
	ContainerLogMaxSize         string
	ContainerLogMaxFiles        int
	ContainerLogMonitorInterval time.Duration
}

// Cluster is a running local control plane with process nodes.
type Cluster struct {
	// Kubeconfig is the path of an admin kubeconfig file (client certificate in group system:masters).
	Kubeconfig string
	// APIServerURL is https://127.0.0.1:PORT.
	APIServerURL string
	// Client is an admin client.
	Client kubernetes.Interface
	// Dir holds the cluster's files; logs are in Dir/logs.
	Dir string
	// Timings says how long Start took to reach each stage.
	Timings Timings

	opts       Options
	restConfig *rest.Config
	pki        *pki
	nodeCert   *tls.Certificate
	apiPort    int
	apiReady   time.Time
	spawner    *spawner
	components []*component
	log        *logrus.Logger
	logFile    *os.File
	ownDir     bool

	nodesMu   sync.Mutex
	nodes     []*runningNode
	nodeCount int

	stopOnce sync.Once
	stopErr  error
}

// Timings are durations from the call to Start.
type Timings struct {
	APIServerReady time.Duration // etcd and kube-apiserver answer (/readyz)
	NodesReady     time.Duration // controller-manager and scheduler started, nodes registered
	Ready          time.Duration // the default namespace can run pods
}

// Start starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and opts.Nodes process nodes
// on free loopback ports, and returns once the cluster can run pods: the API server is ready, the nodes are
// Ready, and the default namespace has its service account and kube-root-ca.crt. Stop it with Stop.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	began := time.Now()
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.Nodes < 0 {
		return nil, fmt.Errorf("cluster.Options.Nodes is %d: use 1 or more", opts.Nodes)
	}
	if _, _, err := parseNodeOptions(opts.Node); err != nil {
		return nil, fmt.Errorf("cluster.Options.Node: %w", err)
	}
	for name, img := range opts.Images {
		if img.Root != "" {
			if st, err := os.Stat(img.Root); err != nil || !st.IsDir() {
				return nil, fmt.Errorf("cluster.Options.Images[%q].Root %q: not a directory (%v): give a root filesystem directory, or \"\" for the host's root", name, img.Root, err)
			}
		}
		for target, src := range img.Files {
			if !filepath.IsAbs(target) {
				return nil, fmt.Errorf("cluster.Options.Images[%q].Files: container path %q must be absolute", name, target)
			}
			if _, err := os.Stat(src); err != nil {
				return nil, fmt.Errorf("cluster.Options.Images[%q].Files[%q]: %w (build it first, e.g. make build)", name, target, err)
			}
		}
	}
	binDir, err := findBinDir(ctx, opts.BinDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, spawner: newSpawner()}
	if opts.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "octo-cluster-"); err != nil {
			return nil, fmt.Errorf("creating cluster directory: %w", err)
		}
		c.ownDir = true
	} else {
		if c.Dir, err = filepath.Abs(opts.Dir); err != nil {
			return nil, fmt.Errorf("cluster.Options.Dir: %w", err)
		}
	}
	defer func() {
		if err != nil {
			c.opts.KeepDir = true // keep the logs for the error message
			_ = c.Stop()
		}
	}()
	if err := os.MkdirAll(filepath.Join(c.Dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("creating cluster directory: %w", err)
	}
	c.log = opts.Logger
	if c.log == nil {
		c.log = logrus.New()
		f, err := os.Create(c.logPath("nodes"))
		if err != nil {
			return nil, fmt.Errorf("creating node log: %w", err)
		}
		c.logFile = f
		c.log.SetOutput(f)
		c.log.SetLevel(logrus.DebugLevel)
	}
	clog := c.log.WithField("component", "cluster")
	if err := c.startControlPlane(ctx, binDir); err != nil {
		return nil, err
	}
	clog.Infof("control plane started after %s", time.Since(began))
	c.Timings.APIServerReady = c.apiReady.Sub(began)
	for i := 0; i < opts.Nodes; i++ {
		if _, err := c.AddNode(ctx, opts.Node); err != nil {
			return nil, err
		}
	}
	c.Timings.NodesReady = time.Since(began)
	clog.Infof("%d node(s) ready after %s", opts.Nodes, c.Timings.NodesReady)
	if err := c.waitDefaultNamespace(ctx); err != nil {
		return nil, err
	}
	c.Timings.Ready = time.Since(began)
	clog.Infof("cluster ready after %s: %s", c.Timings.Ready, c.APIServerURL)
	return c, nil
}

func (c *Cluster) logPath(name string) string { return filepath.Join(c.Dir, "logs", name+".log") }

// LogPaths lists the component log files (empty when Options.Logs was set).
func (c *Cluster) LogPaths() []string {
	var paths []string
	for _, comp := range c.components {
		if comp.logPath != "" {
			paths = append(paths, comp.logPath)
		}
	}
	if c.logFile != nil {
		paths = append(paths, c.logFile.Name())
	}
	return paths
}

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Stop stops the nodes (killing their containers) and the control plane, and removes the cluster's
// directory unless it must be kept. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		c.nodesMu.Lock()
		nodes := c.nodes
		c.nodesMu.Unlock()
		for _, n := range nodes {
			n.cancel()
		}
		for _, n := range nodes {
			if err := <-n.done; err != nil {
				errs = append(errs, err)
			}
		}
		for i := len(c.components) - 1; i >= 0; i-- {
			if err := c.components[i].stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		c.spawner.close()
		if c.logFile != nil {
			c.logFile.Close()
		}
		if c.ownDir && !c.opts.KeepDir {
			if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("removing cluster directory: %w", err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}
