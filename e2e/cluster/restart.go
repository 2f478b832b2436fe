package cluster

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/rest"
)

// RestartAPIServer kills the kube-apiserver (SIGKILL: its graceful shutdown takes more than 10 s here) and
// starts it again with the same flags on the same port, as after a crash: etcd keeps the cluster's state, and
// every client (controllers, scheduler, nodes, the tests' agents) loses its connections and watches and
// must come back by itself. It returns once the new API server answers /readyz. Do not call it concurrently
// with itself or Stop, nor from a parallel test: every test of the package shares the API server.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	for i, old := range c.components {
		if old.name != "kube-apiserver" {
			continue
		}
		_ = old.cmd.Process.Kill()
		<-old.done
		c.log.WithField("component", "cluster").Info("kube-apiserver killed; starting it again")
		api, err := c.startComponent(old.name, old.bin, old.args)
		if err != nil {
			return fmt.Errorf("restarting the kube-apiserver: %w", err)
		}
		// In the old one's place, so that Stop still stops the components in the reverse order of their start.
		c.components[i], c.components = api, c.components[:len(c.components)-1]
		if err := c.waitAPIServer(ctx, api); err != nil {
			return fmt.Errorf("restarting the kube-apiserver: %w", err)
		}
		c.log.WithField("component", "cluster").Info("kube-apiserver ready again")
		return nil
	}
	return fmt.Errorf("restarting the kube-apiserver: the cluster has none (was it stopped?)")
}

// waitAPIServer waits until the API server answers /readyz, failing early when its process exits.
func (c *Cluster) waitAPIServer(ctx context.Context, api *component) error {
	probeConfig := rest.CopyConfig(c.restConfig)
	probeConfig.Timeout = 5 * time.Second
	httpClient, err := rest.HTTPClientFor(probeConfig)
	if err != nil {
		return fmt.Errorf("building API client: %w", err)
	}
	return waitFor(ctx, 2*time.Minute, api, "kube-apiserver", func() error { return httpOK(httpClient, c.APIServerURL+"/readyz") })
}
