package cluster

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RunTests is a TestMain for an e2e package: it starts one cluster with opts, hands it to use (keep it in a
// package variable), runs the tests, stops the cluster and exits. When a test fails, or the cluster does not
// start, the cluster's directory is kept and its log files are printed.
//
//	var kube *cluster.Cluster
//
//	func TestMain(m *testing.M) { cluster.RunTests(m, cluster.Options{}, func(c *cluster.Cluster) { kube = c }) }
func RunTests(m *testing.M, opts Options, use func(*Cluster)) {
	os.Exit(Run(m, opts, use))
}

// Run is RunTests without the exit: it returns the exit code, for a TestMain with its own cleanup.
func Run(m *testing.M, opts Options, use func(*Cluster)) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	start := time.Now()
	c, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the local cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "local cluster ready in %s: %s (files in %s)\n", time.Since(start).Round(time.Millisecond), c.APIServerURL, c.Dir)
	use(c)
	code := m.Run()
	if code != 0 {
		c.opts.KeepDir = true
		fmt.Fprintf(os.Stderr, "tests failed; the cluster's logs are kept:\n")
		for _, p := range c.LogPaths() {
			fmt.Fprintf(os.Stderr, "    %s\n", p)
		}
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the local cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a namespace for one test, named after it, with the given labels, and deletes it when the
// test ends. It returns once the namespace's default service account exists (pods can be created).
func (c *Cluster) Namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	prefix := nonName.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	prefix = strings.Trim(prefix, "-") + "-"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		err := c.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		if err != nil {
			t.Logf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	err = waitFor(ctx, time.Minute, nil, "the default service account in "+ns.Name, func() error {
		_, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}
