package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

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
	if err := c.waitAPIServer(ctx, api); err != nil {
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
