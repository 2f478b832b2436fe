package chart

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/chartgen"
)

// access is one question to the API server's authorizer and the answer the chart must produce.
type access struct {
	sa, verb, group, resource, ns, name string
	want                                bool
}

// install installs the embedded chart as release ow in ns (no wait: RBAC needs no running pods).
func install(t *testing.T, ns string, files []string, sets ...string) chartgen.Values {
	t.Helper()
	l, err := chartgen.LoadAndValidate(files, append([]string{"image.repository=" + imageRepo}, sets...))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := chartgen.EmbeddedChart()
	if err != nil {
		t.Fatal(err)
	}
	hc, err := chartgen.HelmConfig(kube.RESTConfig(), ns, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := chartgen.Apply(ctx, hc, ch, l.User, chartgen.ApplyOptions{Release: "ow", Namespace: ns}); err != nil {
		t.Fatalf("installing the chart: %v", err)
	}
	return l.Values
}

func checkAccess(t *testing.T, saNS string, cases []access) {
	t.Helper()
	for _, c := range cases {
		if got := can(t, saNS, c.sa, c.verb, c.group, c.resource, c.ns, c.name); got != c.want {
			t.Errorf("%s may %s %s.%s in %q (name %q): %v, want %v", c.sa, c.verb, c.resource, c.group, c.ns, c.name, got, c.want)
		}
	}
}

// The worker manages Jobs (and what running them needs) in its own namespace and nothing elsewhere; scripts
// get exactly the configured rules, in the target namespace only.
func TestRBACNamespaceRules(t *testing.T) {
	ns := kube.Namespace(t, restricted)
	target := kube.Namespace(t, nil)
	other := kube.Namespace(t, nil)
	install(t, ns, []string{"../../values/restricted-permissions.yaml"}, "scriptPods.serviceAccount.targetNamespaces={"+target+"}")
	const worker, scripts = "ow-octo-worker", "ow-octo-worker-scripts"
	checkAccess(t, ns, []access{
		// The worker in its namespace: operations.
		{worker, "create", "batch", "jobs", ns, "", true},
		{worker, "watch", "batch", "jobs", ns, "", true},
		{worker, "delete", "", "pods", ns, "", true},
		{worker, "get", "", "pods/log", ns, "", true},
		{worker, "create", "", "secrets", ns, "", true},
		{worker, "create", "", "events", ns, "", true},
		// ... and its own release (self-update).
		{worker, "patch", "apps", "deployments", ns, "ow-octo-worker", true},
		{worker, "escalate", "rbac.authorization.k8s.io", "roles", ns, "ow-octo-worker", true},
		{worker, "escalate", "rbac.authorization.k8s.io", "roles", ns, "someone-else", false},
		{worker, "get", "rbac.authorization.k8s.io", "roles", target, "ow-octo-worker-scripts", true},
		{worker, "update", "rbac.authorization.k8s.io", "roles", target, "ow-octo-worker-scripts", false},
		// Nothing in another namespace, nothing cluster-wide.
		{worker, "create", "batch", "jobs", other, "", false},
		{worker, "create", "batch", "jobs", target, "", false},
		{worker, "get", "", "secrets", other, "", false},
		{worker, "list", "", "pods", "", "", false},
		{worker, "list", "", "nodes", "", "", false},
		{worker, "create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", false},
		// Scripts: the configured rules in the target namespace ...
		{scripts, "patch", "apps", "deployments", target, "", true},
		{scripts, "watch", "apps", "deployments", target, "", true},
		{scripts, "create", "", "configmaps", target, "", true},
		{scripts, "get", "", "pods/log", target, "", true},
		// ... and nothing beyond them.
		{scripts, "delete", "apps", "deployments", target, "", false},
		{scripts, "create", "apps", "deployments", target, "", false},
		{scripts, "delete", "", "configmaps", target, "", false},
		{scripts, "get", "", "secrets", target, "", false},
		{scripts, "get", "", "configmaps", ns, "", false},
		{scripts, "get", "", "secrets", ns, "", false},
		{scripts, "create", "batch", "jobs", ns, "", false},
		{scripts, "get", "apps", "deployments", other, "", false},
		{scripts, "list", "", "pods", "", "", false},
	})
}

// Without rules scripts get nothing; with a cluster role they get it cluster-wide, and the worker may only
// read the cluster-scoped objects of its release by name.
func TestRBACScriptOptions(t *testing.T) {
	t.Run("no permissions", func(t *testing.T) {
		ns := kube.Namespace(t, restricted)
		install(t, ns, []string{"../../values/defaults.yaml"})
		checkAccess(t, ns, []access{
			{"ow-octo-worker-scripts", "get", "", "pods", ns, "", false},
			{"ow-octo-worker-scripts", "get", "", "configmaps", ns, "", false},
			{"ow-octo-worker", "create", "batch", "jobs", ns, "", true},
		})
	})
	t.Run("cluster role cluster-wide", func(t *testing.T) {
		ns := kube.Namespace(t, restricted)
		other := kube.Namespace(t, nil)
		install(t, ns, []string{"../../values/defaults.yaml"}, "scriptPods.serviceAccount.clusterRole=view")
		crb := ns + "-ow-octo-worker-scripts"
		checkAccess(t, ns, []access{
			{"ow-octo-worker-scripts", "list", "", "pods", other, "", true},
			{"ow-octo-worker-scripts", "list", "apps", "deployments", "", "", true},
			{"ow-octo-worker-scripts", "create", "", "configmaps", other, "", false},
			{"ow-octo-worker-scripts", "get", "", "secrets", other, "", false},
			{"ow-octo-worker", "get", "rbac.authorization.k8s.io", "clusterrolebindings", "", crb, true},
			{"ow-octo-worker", "update", "rbac.authorization.k8s.io", "clusterrolebindings", "", crb, false},
			{"ow-octo-worker", "get", "rbac.authorization.k8s.io", "clusterrolebindings", "", "cluster-admin", false},
			{"ow-octo-worker", "list", "", "pods", other, "", false},
		})
	})
	t.Run("cluster role in target namespaces", func(t *testing.T) {
		ns := kube.Namespace(t, restricted)
		target, other := kube.Namespace(t, nil), kube.Namespace(t, nil)
		install(t, ns, []string{"../../values/cluster-role.yaml"}, "scriptPods.serviceAccount.targetNamespaces={"+target+"}")
		checkAccess(t, ns, []access{
			{"ow-octo-worker-scripts", "create", "apps", "deployments", target, "", true},
			{"ow-octo-worker-scripts", "create", "apps", "deployments", other, "", false},
			{"ow-octo-worker-scripts", "create", "apps", "deployments", ns, "", false},
		})
	})
}

// The chart's RBAC as a user checks it, with the upstream kubectl: `kubectl auth can-i ... --as
// system:serviceaccount:NS:SA`, the admin impersonating the service account (so the API server adds the
// account's groups) and asking through a SelfSubjectAccessReview. Representative questions of the tests
// above, allowed and denied, for the worker and the script pods; each must give the expected answer both
// through kubectl and through a SubjectAccessReview.
func TestKubectlAuthCanI(t *testing.T) {
	t.Parallel()
	const worker, scripts = "ow-octo-worker", "ow-octo-worker-scripts"
	t.Run("namespace rules", func(t *testing.T) {
		t.Parallel()
		ns := kube.Namespace(t, restricted)
		target, other := kube.Namespace(t, nil), kube.Namespace(t, nil)
		install(t, ns, []string{"../../values/restricted-permissions.yaml"}, "scriptPods.serviceAccount.targetNamespaces={"+target+"}")
		checkKubectlAccess(t, ns, []access{
			{worker, "create", "batch", "jobs", ns, "", true},
			{worker, "get", "", "pods/log", ns, "", true},
			{worker, "escalate", "rbac.authorization.k8s.io", "roles", ns, "ow-octo-worker", true},
			{worker, "escalate", "rbac.authorization.k8s.io", "roles", ns, "someone-else", false},
			{worker, "create", "batch", "jobs", other, "", false},
			{worker, "list", "", "pods", "", "", false},
			{worker, "list", "", "nodes", "", "", false},
			{scripts, "patch", "apps", "deployments", target, "", true},
			{scripts, "get", "", "pods/log", target, "", true},
			{scripts, "delete", "apps", "deployments", target, "", false},
			{scripts, "get", "", "secrets", target, "", false},
			{scripts, "get", "", "secrets", ns, "", false},
			{scripts, "create", "batch", "jobs", ns, "", false},
		})
	})
	t.Run("cluster role cluster-wide", func(t *testing.T) {
		t.Parallel()
		ns := kube.Namespace(t, restricted)
		other := kube.Namespace(t, nil)
		install(t, ns, []string{"../../values/defaults.yaml"}, "scriptPods.serviceAccount.clusterRole=view")
		crb := ns + "-ow-octo-worker-scripts"
		checkKubectlAccess(t, ns, []access{
			{scripts, "list", "", "pods", "", "", true},
			{scripts, "list", "apps", "deployments", other, "", true},
			{scripts, "get", "", "secrets", other, "", false},
			{worker, "get", "rbac.authorization.k8s.io", "clusterrolebindings", "", crb, true},
			{worker, "update", "rbac.authorization.k8s.io", "clusterrolebindings", "", crb, false},
		})
	})
}

// checkKubectlAccess asks every question through `kubectl auth can-i` and through a SubjectAccessReview.
func checkKubectlAccess(t *testing.T, saNS string, cases []access) {
	t.Helper()
	for _, c := range cases {
		if got := canI(t, saNS, c); got != c.want {
			t.Errorf("kubectl auth can-i: %s may %s %s.%s in %q (name %q): %v, want %v", c.sa, c.verb, c.resource, c.group, c.ns, c.name, got, c.want)
		}
		if got := can(t, saNS, c.sa, c.verb, c.group, c.resource, c.ns, c.name); got != c.want {
			t.Errorf("SubjectAccessReview: %s may %s %s.%s in %q (name %q): %v, want %v", c.sa, c.verb, c.resource, c.group, c.ns, c.name, got, c.want)
		}
	}
}

// canI runs `kubectl auth can-i VERB RESOURCE[.GROUP][/NAME] [--subresource S] (-n NS | --all-namespaces)
// --as system:serviceaccount:SANS:SA` against the cluster and returns its answer. An access with ns "" asks
// across all namespaces (or, for a cluster-scoped resource, at cluster scope).
func canI(t *testing.T, saNS string, a access) bool {
	t.Helper()
	res, sub, _ := strings.Cut(a.resource, "/")
	if a.group != "" {
		res += "." + a.group
	}
	if a.name != "" {
		res += "/" + a.name
	}
	args := []string{"auth", "can-i", a.verb, res, "--as", "system:serviceaccount:" + saNS + ":" + a.sa}
	if sub != "" {
		args = append(args, "--subresource", sub)
	}
	if a.ns == "" {
		args = append(args, "--all-namespaces")
	} else {
		args = append(args, "--namespace", a.ns)
	}
	out, errOut, err := kube.RunTool(t, "kubectl", args...)
	answer := strings.TrimSpace(out)
	var exit *exec.ExitError
	switch {
	case err == nil && answer == "yes":
		return true
	case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.HasPrefix(answer, "no"):
		return false
	}
	t.Fatalf("kubectl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	return false
}
