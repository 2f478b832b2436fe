// Package cluster starts a local Kubernetes control plane for end-to-end tests and the demo: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler (real binaries, built by scripts/build-kube.sh)
// plus process nodes (package kubelet), all on free loopback ports, with a certificate authority generated
// at start.
//
// The cluster behaves like a real one: client-certificate authentication, RBAC authorization, service
// account tokens (TokenRequest, bound to pods), every controller of the controller-manager (Job,
// TTL-after-finished, garbage collector, ...), Pod Security admission, and the kube-root-ca.crt ConfigMap in
// every namespace. Pods see KUBERNETES_SERVICE_HOST/PORT pointing at the API server, so in-cluster client
// configuration works inside them.
//
// Use one cluster per test package:
//
//	var kube *cluster.Cluster
//
//	func TestMain(m *testing.M) {
//		cluster.RunTests(m, cluster.Options{
//			Images: map[string]cluster.Image{
//				"octo-worker:e2e": {Files: map[string]string{"/usr/local/bin/octo-worker": os.Getenv("OCTO_BINARY")}},
//			},
//		}, func(c *cluster.Cluster) { kube = c })
//	}
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		ns := kube.Namespace(t, nil) // deleted when the test ends
//		kube.Client.CoreV1().Pods(ns).Create(...)
//	}
//
// Tests run the upstream helm and kubectl (built by scripts/build-clis.sh, found through $OCTO_HELM and
// $OCTO_KUBECTL) with Tool, RunTool and Cluster.RunTool.
//
// Run e2e packages one at a time (go test -p 1): each starts its own cluster. Start needs root (the nodes
// create mount namespaces). Stop kills every process the cluster started; if the test binary dies instead,
// the kernel kills them (Pdeathsig), but the cluster's temporary directory stays behind.
package cluster
