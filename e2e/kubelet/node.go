package kubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
)

// Config describes one node.
type Config struct {
	// Name of the Node object. Required.
	Name string
	// Client talks to the API server (the node may use admin credentials). Required.
	Client kubernetes.Interface
	// CPU, Memory and Pods are the node's capacity and allocatable. Defaults: 4 CPU, 8Gi, 110 pods.
	CPU    resource.Quantity
	Memory resource.Quantity
	Pods   int
	// Images maps image names to root filesystems and files; other valid names run on the host's root.
	Images map[string]Image
	// PullFailurePatterns are image names ("*" matches anything, "/" included) whose pull always fails
	// (ErrImagePull, then ImagePullBackOff). nil means DefaultPullFailurePatterns.
	PullFailurePatterns []string
	// APIServerHost and APIServerPort are given to containers as KUBERNETES_SERVICE_HOST/PORT, so that
	// in-cluster client configuration reaches the real API server.
	APIServerHost string
	APIServerPort int
	// StateDir holds the node's pod directories (volumes, logs). Required; the node removes what it creates.
	StateDir string
	// TLSCertificate serves the kubelet API (container logs). nil: a self-signed certificate.
	TLSCertificate *tls.Certificate
	// Logger receives the node's logs; a "component" field is added. nil: discarded.
	Logger logrus.FieldLogger
	// Version is reported as the node's kubelet version. Default "v1.37.2".
	Version string
	// ContainerLogMaxSize, ContainerLogMaxFiles and ContainerLogMonitorInterval rotate container logs as the
	// kubelet's settings of the same names do (see rotate.go). Defaults, as the kubelet's: "10Mi", 5, 10s.
	// A negative size ("-1") turns rotation off; MaxFiles must be at least 2. The interval may be shorter
	// than the kubelet's minimum (3s) so that tests rotate quickly.
	ContainerLogMaxSize         string
	ContainerLogMaxFiles        int
	ContainerLogMonitorInterval time.Duration
}

// Node is a Kubernetes node whose containers are host processes.
type Node struct {
	cfg       Config
	log       *logrus.Entry
	pullFails globMatcher
	rotation  rotationPolicy
	recorder  record.EventRecorder
	ctx       context.Context // the node's lifetime (set by Run)

	ready chan struct{}
	port  int

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	byName  map[string]*podWorker // namespace/name
	done    map[types.UID]bool    // pods whose worker finished, until the informer reports them deleted
	wg      sync.WaitGroup
}

// New validates cfg and returns a node; Run starts it.
func New(cfg Config) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("kubelet.Config.Name is required")
	}
	if cfg.Client == nil {
		return nil, errors.New("kubelet.Config.Client is required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("kubelet.Config.StateDir is required: a directory for pod volumes and logs")
	}
	if cfg.CPU.IsZero() {
		cfg.CPU = resource.MustParse("4")
	}
	if cfg.Memory.IsZero() {
		cfg.Memory = resource.MustParse("8Gi")
	}
	if cfg.Pods == 0 {
		cfg.Pods = 110
	}
	if cfg.Pods < 0 {
		return nil, fmt.Errorf("kubelet.Config.Pods is %d: use a positive number", cfg.Pods)
	}
	if cfg.PullFailurePatterns == nil {
		cfg.PullFailurePatterns = DefaultPullFailurePatterns
	}
	if cfg.Version == "" {
		cfg.Version = "v1.37.2"
	}
	rotation, err := newRotationPolicy(cfg.ContainerLogMaxSize, cfg.ContainerLogMaxFiles, cfg.ContainerLogMonitorInterval)
	if err != nil {
		return nil, fmt.Errorf("kubelet.Config.%w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		logger = l
	}
	for name, img := range cfg.Images {
		if err := validateImageName(name); err != nil {
			return nil, fmt.Errorf("kubelet.Config.Images[%q]: %w", name, err)
		}
		for target, src := range img.Files {
			if _, err := os.Stat(src); err != nil {
				return nil, fmt.Errorf("kubelet.Config.Images[%q].Files[%q]: %w", name, target, err)
			}
		}
	}
	return &Node{
		cfg:       cfg,
		log:       logger.WithFields(logrus.Fields{"component": "kubelet", "node": cfg.Name}),
		pullFails: newGlobMatcher(cfg.PullFailurePatterns),
		rotation:  rotation,
		ready:     make(chan struct{}),
		workers:   map[types.UID]*podWorker{},
		byName:    map[string]*podWorker{},
		done:      map[types.UID]bool{},
	}, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Ready is closed once the Node is registered and the node watches its pods.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Port is the kubelet API's port on 127.0.0.1 (valid once Ready).
func (n *Node) Port() int { return n.port }

// Run registers the node, runs its pods and serves its API until ctx ends. When it returns, every container
// process it started has been killed; the Node and Pod objects stay in the API.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.ctx = ctx
	if err := os.MkdirAll(n.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating node state directory: %w", err)
	}

	cert := n.cfg.TLSCertificate
	if cert == nil {
		c, err := selfSigned(n.cfg.Name)
		if err != nil {
			return err
		}
		cert = c
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the kubelet API: %w", err)
	}
	n.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{
		Handler:           n.handler(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.WithError(err).Error("kubelet API server stopped")
		}
	}()
	defer func() {
		shutdownCtx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Shutdown(shutdownCtx)
		bg.Wait()
	}()

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: n.cfg.Client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	n.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: n.cfg.Name})

	if err := n.register(ctx); err != nil {
		return err
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		n.heartbeat(ctx)
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		n.rotateLogs(ctx)
	}()

	factory := informers.NewSharedInformerFactoryWithOptions(n.cfg.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.cfg.Name).String()
	}))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.podChanged(obj) },
		UpdateFunc: func(_, obj any) { n.podChanged(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				n.podRemoved(p)
			}
		},
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		n.wg.Wait()
		return fmt.Errorf("node %s: pod informer did not sync: %w", n.cfg.Name, ctx.Err())
	}
	close(n.ready)
	n.log.WithField("port", n.port).Info("node ready")
	<-ctx.Done()
	n.wg.Wait()
	return nil
}

func (n *Node) podChanged(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	n.mu.Lock()
	w, ok := n.workers[pod.UID]
	if !ok {
		if n.ctx.Err() != nil || n.done[pod.UID] {
			n.mu.Unlock()
			return
		}
		w = newPodWorker(n, n.ctx, pod)
		n.workers[pod.UID] = w
		n.byName[pod.Namespace+"/"+pod.Name] = w
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			w.run()
			n.mu.Lock()
			delete(n.workers, w.uid)
			n.done[w.uid] = true
			if n.byName[pod.Namespace+"/"+pod.Name] == w {
				delete(n.byName, pod.Namespace+"/"+pod.Name)
			}
			n.mu.Unlock()
		}()
	}
	n.mu.Unlock()
	w.update(pod)
}

func (n *Node) podRemoved(pod *corev1.Pod) {
	n.mu.Lock()
	w := n.workers[pod.UID]
	delete(n.done, pod.UID)
	n.mu.Unlock()
	if w != nil {
		w.removed()
	}
}

func (n *Node) worker(namespace, name string) *podWorker {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byName[namespace+"/"+name]
}

// nodeObject is the Node as this node reports it.
func (n *Node) nodeStatus(now metav1.Time) corev1.NodeStatus {
	res := corev1.ResourceList{
		corev1.ResourceCPU:              n.cfg.CPU,
		corev1.ResourceMemory:           n.cfg.Memory,
		corev1.ResourcePods:             *resource.NewQuantity(int64(n.cfg.Pods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    res,
		Allocatable: res,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status (octo process node)"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: n.cfg.Name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(n.port)}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               n.cfg.Name,
			SystemUUID:              n.cfg.Name,
			BootID:                  n.cfg.Name,
			KernelVersion:           kernelVersion(),
			OSImage:                 "octo process node",
			ContainerRuntimeVersion: "octo-process://v1",
			KubeletVersion:          n.cfg.Version,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
		},
	}
}

func kernelVersion() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return string(b[:len(b)-1])
}

// register creates the Node (or takes over an existing one of the same name).
func (n *Node) register(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name, Labels: map[string]string{
			"kubernetes.io/hostname": n.cfg.Name,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     runtime.GOARCH,
			"octo-worker.dev/node":   "process",
		}},
	}
	nodes := n.cfg.Client.CoreV1().Nodes()
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = nodes.Get(ctx, n.cfg.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering node %s: %w", n.cfg.Name, err)
	}
	// Controllers (node lifecycle, TTL) update a new Node at once: retry on conflicts with a fresh copy.
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		created.Status = n.nodeStatus(metav1.Now())
		_, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			if fresh, gerr := nodes.Get(ctx, n.cfg.Name, metav1.GetOptions{}); gerr == nil {
				created = fresh
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("reporting node %s status: %w", n.cfg.Name, err)
	}
	return nil
}

// heartbeat renews the node's Lease every 10 s and its status every 30 s, as the kubelet does.
func (n *Node) heartbeat(ctx context.Context) {
	leases := n.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	nodes := n.cfg.Client.CoreV1().Nodes()
	var lastStatus time.Time
	for {
		now := metav1.NowMicro()
		lease, err := leases.Get(ctx, n.cfg.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			lease = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name, Namespace: corev1.NamespaceNodeLease},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &n.cfg.Name, LeaseDurationSeconds: ptrTo(int32(40)), RenewTime: &now},
			}
			if node, nerr := nodes.Get(ctx, n.cfg.Name, metav1.GetOptions{}); nerr == nil {
				lease.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
			}
			_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.RenewTime = &now
			lease.Spec.HolderIdentity = &n.cfg.Name
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			n.log.WithError(err).Warn("renewing node lease")
		}
		if time.Since(lastStatus) > 30*time.Second {
			if node, err := nodes.Get(ctx, n.cfg.Name, metav1.GetOptions{}); err == nil {
				old := node.Status.Conditions
				node.Status = n.nodeStatus(metav1.Now())
				for i, c := range node.Status.Conditions {
					for _, o := range old {
						if o.Type == c.Type && o.Status == c.Status {
							node.Status.Conditions[i].LastTransitionTime = o.LastTransitionTime
						}
					}
				}
				if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err == nil {
					lastStatus = time.Now()
				} else if ctx.Err() == nil {
					n.log.WithError(err).Warn("updating node status")
				}
			}
		}
		if !sleepCtx(ctx, 10*time.Second) {
			return
		}
	}
}
