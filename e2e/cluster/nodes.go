package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/octo-worker/octo-worker/e2e/kubelet"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
)

type runningNode struct {
	node   *kubelet.Node
	cancel context.CancelFunc
	done   chan error
}

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

		ContainerLogMaxSize:         o.ContainerLogMaxSize,
		ContainerLogMaxFiles:        o.ContainerLogMaxFiles,
		ContainerLogMonitorInterval: o.ContainerLogMonitorInterval,
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
	if err := kubelet.ValidateLogRotation(o.ContainerLogMaxSize, o.ContainerLogMaxFiles, o.ContainerLogMonitorInterval); err != nil {
		return cpu, mem, fmt.Errorf("NodeOptions.%w", err)
	}
	return cpu, mem, nil
}
