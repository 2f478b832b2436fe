package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/e2e/cluster"
)

// A missing upstream CLI is an error that says what to run, whatever is wrong with the variable. Not
// parallel: it sets OCTO_HELM for its own process.
func TestToolPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "helm")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, tool, env, want string
	}{
		{"unset", "helm", "", "OCTO_HELM is not set"},
		{"missing file", "helm", filepath.Join(dir, "nonexistent"), "no such file"},
		{"directory", "helm", dir, "not an executable file"},
		{"not executable", "helm", plain, "not an executable file"},
		{"unknown tool", "kustomize", exe, `no upstream CLI "kustomize"`},
		{"ok", "helm", exe, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OCTO_HELM", tc.env)
			got, err := cluster.ToolPath(tc.tool)
			if tc.want == "" {
				if err != nil || got != exe {
					t.Fatalf("ToolPath: %q, %v; want %q", got, err, exe)
				}
				return
			}
			if err == nil {
				t.Fatalf("ToolPath: %q, want an error containing %q", got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || (tc.tool == "helm" && !strings.Contains(err.Error(), "make clis")) {
				t.Errorf("error %q does not contain %q and what to run", err, tc.want)
			}
		})
	}
}

// The upstream kubectl and helm reach the cluster as its admin through Cluster.RunTool.
func TestToolsAgainstCluster(t *testing.T) {
	t.Parallel()
	ns := kube.Namespace(t, nil)
	out, errOut, err := kube.RunTool(t, "kubectl", "get", "namespace", ns, "-o", "name")
	if err != nil || out != "namespace/"+ns+"\n" {
		t.Errorf("kubectl get namespace: %q, %v\n%s", out, err, errOut)
	}
	out, errOut, err = kube.RunTool(t, "helm", "list", "--namespace", ns, "--output", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("helm list: %q, %v\n%s", out, err, errOut)
	}
}
