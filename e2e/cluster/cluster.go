package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/octo-worker/octo-worker/e2e/kubelet"
	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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

type runningNode struct {
	node   *kubelet.Node
	cancel context.CancelFunc
	done   chan error
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

func (c *Cluster) startControlPlane(ctx context.Context, binDir string) error {
	p, err := newPKI(filepath.Join(c.Dir, "pki"))
	if err != nil {
		return err
	}
	c.pki = p
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	serving, err := p.issue("apiserver", "kube-apiserver", nil, true,
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	admin, err := p.issue("admin", "octo-admin", []string{"system:masters"}, false, nil, nil)
	if err != nil {
		return err
	}
	kcm, err := p.issue("controller-manager", "system:kube-controller-manager", nil, false, nil, nil)
	if err != nil {
		return err
	}
	sched, err := p.issue("scheduler", "system:kube-scheduler", nil, false, nil, nil)
	if err != nil {
		return err
	}
	nodeKP, err := p.issue("kubelet-serving", "octo-process-node", nil, true, loopback, []string{"localhost"})
	if err != nil {
		return err
	}
	if c.nodeCert, err = nodeKP.tls(); err != nil {
		return err
	}
	saKey, saPub, err := p.serviceAccountKey()
	if err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdPort, peerPort := ports[0], ports[1]
	c.apiPort = ports[2]
	c.APIServerURL = "https://127.0.0.1:" + strconv.Itoa(c.apiPort)

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcd, err := c.startComponent("etcd", filepath.Join(binDir, "etcd"), []string{
		"--name=default",
		"--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		"--unsafe-no-fsync", // test data: durability is not needed, speed is
		"--log-level=warn",
	})
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, etcd, "etcd", func() error { return httpOK(&http.Client{Timeout: 5 * time.Second}, etcdURL+"/health") }); err != nil {
		return err
	}

	api, err := c.startComponent("kube-apiserver", filepath.Join(binDir, "kube-apiserver"), []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.apiPort),
		"--cert-dir=" + filepath.Join(c.Dir, "pki", "apiserver-generated"),
		"--tls-cert-file=" + serving.certFile,
		"--tls-private-key-file=" + serving.keyFile,
		"--client-ca-file=" + p.caFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--allow-privileged=true", // privileged pods are refused by Pod Security admission, per namespace
		"--kubelet-preferred-address-types=InternalIP",
		// The "kubernetes" Service's endpoints would be 127.0.0.1, which Endpoints validation refuses; pods
		// reach the API server through KUBERNETES_SERVICE_HOST=127.0.0.1 instead.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	})
	if err != nil {
		return err
	}
	c.restConfig = &rest.Config{
		Host: c.APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caPEM,
			CertData: admin.certPEM,
			KeyData:  admin.keyPEM,
		},
		QPS:   100,
		Burst: 200,
	}
	probeConfig := rest.CopyConfig(c.restConfig)
	probeConfig.Timeout = 5 * time.Second
	httpClient, err := rest.HTTPClientFor(probeConfig)
	if err != nil {
		return fmt.Errorf("building API client: %w", err)
	}
	if err := waitFor(ctx, 2*time.Minute, api, "kube-apiserver", func() error { return httpOK(httpClient, c.APIServerURL+"/readyz") }); err != nil {
		return err
	}
	c.apiReady = time.Now()
	c.log.WithField("component", "cluster").Info("kube-apiserver ready")
	if c.Client, err = kubernetes.NewForConfig(c.restConfig); err != nil {
		return fmt.Errorf("building API client: %w", err)
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := c.writeKubeconfig(c.Kubeconfig, "octo-admin", admin); err != nil {
		return err
	}
	kcmConfig := filepath.Join(c.Dir, "controller-manager.kubeconfig")
	if err := c.writeKubeconfig(kcmConfig, "system:kube-controller-manager", kcm); err != nil {
		return err
	}
	schedConfig := filepath.Join(c.Dir, "scheduler.kubeconfig")
	if err := c.writeKubeconfig(schedConfig, "system:kube-scheduler", sched); err != nil {
		return err
	}
	if _, err := c.startComponent("kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"), []string{
		"--kubeconfig=" + kcmConfig,
		"--service-account-private-key-file=" + saKey,
		"--root-ca-file=" + p.caFile,
		"--cluster-signing-cert-file=" + p.caFile,
		"--cluster-signing-key-file=" + filepath.Join(p.dir, "ca.key"),
		"--controllers=*",
		"--use-service-account-credentials=true", // each controller acts as its own service account, under RBAC
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	}); err != nil {
		return err
	}
	if _, err := c.startComponent("kube-scheduler", filepath.Join(binDir, "kube-scheduler"), []string{
		"--kubeconfig=" + schedConfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	}); err != nil {
		return err
	}
	return nil
}

// waitDefaultNamespace waits until pods can be created in "default": the service-account and root-CA
// publisher controllers have run.
func (c *Cluster) waitDefaultNamespace(ctx context.Context) error {
	return waitFor(ctx, 2*time.Minute, nil, "the controller-manager (default service account and kube-root-ca.crt)", func() error {
		for _, comp := range c.components {
			if err := comp.exited(); err != nil {
				return err
			}
		}
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := c.Client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err
	})
}

func (c *Cluster) writeKubeconfig(path, user string, kp *keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["octo-local"] = &clientcmdapi.Cluster{Server: c.APIServerURL, CertificateAuthorityData: c.pki.caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.certPEM, ClientKeyData: kp.keyPEM}
	cfg.Contexts["octo-local"] = &clientcmdapi.Context{Cluster: "octo-local", AuthInfo: user}
	cfg.CurrentContext = "octo-local"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// AddNode starts one more process node and returns its name once the node is Ready.
func (c *Cluster) AddNode(ctx context.Context, o NodeOptions) (string, error) {
	cpu, mem, err := parseNodeOptions(o)
	if err != nil {
		return "", fmt.Errorf("AddNode: %w", err)
	}
	c.nodesMu.Lock()
	c.nodeCount++
	name := o.Name
	if name == "" {
		name = "node-" + strconv.Itoa(c.nodeCount)
	}
	c.nodesMu.Unlock()
	cfg := c.RESTConfig()
	cfg.UserAgent = "octo-process-node/" + name
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("AddNode %s: building client: %w", name, err)
	}
	n, err := kubelet.New(kubelet.Config{
		Name:                name,
		Client:              client,
		CPU:                 cpu,
		Memory:              mem,
		Pods:                o.Pods,
		Images:              c.opts.Images,
		PullFailurePatterns: c.opts.PullFailurePatterns,
		APIServerHost:       "127.0.0.1",
		APIServerPort:       c.apiPort,
		StateDir:            filepath.Join(c.Dir, "nodes", name),
		TLSCertificate:      c.nodeCert,
		Logger:              c.log,
	})
	if err != nil {
		return "", fmt.Errorf("AddNode %s: %w", name, err)
	}
	nctx, cancel := context.WithCancel(context.Background())
	rn := &runningNode{node: n, cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- n.Run(nctx) }()
	select {
	case <-n.Ready():
	case err := <-rn.done:
		cancel()
		return "", fmt.Errorf("AddNode %s: %w", name, err)
	case <-ctx.Done():
		cancel()
		<-rn.done
		return "", fmt.Errorf("AddNode %s: waiting for the node: %w", name, ctx.Err())
	}
	c.nodesMu.Lock()
	c.nodes = append(c.nodes, rn)
	c.nodesMu.Unlock()
	return name, nil
}

func parseNodeOptions(o NodeOptions) (cpu, mem resource.Quantity, err error) {
	if o.CPU == "" {
		o.CPU = "4"
	}
	if o.Memory == "" {
		o.Memory = "8Gi"
	}
	if cpu, err = resource.ParseQuantity(o.CPU); err != nil {
		return cpu, mem, fmt.Errorf("NodeOptions.CPU %q: %w (use e.g. \"4\" or \"500m\")", o.CPU, err)
	}
	if mem, err = resource.ParseQuantity(o.Memory); err != nil {
		return cpu, mem, fmt.Errorf("NodeOptions.Memory %q: %w (use e.g. \"8Gi\")", o.Memory, err)
	}
	if o.Pods < 0 {
		return cpu, mem, fmt.Errorf("NodeOptions.Pods is %d: use a positive number", o.Pods)
	}
	return cpu, mem, nil
}

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

func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func httpOK(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// waitFor polls cond every 100 ms until it succeeds, the component exits, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, comp *component, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if comp != nil {
			if exitErr := comp.exited(); exitErr != nil {
				return fmt.Errorf("waiting for %s: %w", what, exitErr)
			}
		}
		if time.Now().After(deadline) {
			msg := ""
			if comp != nil {
				msg = tailFile(comp.logPath, 15)
			}
			return fmt.Errorf("waiting for %s: not ready after %s: %w%s", what, timeout, err, msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
