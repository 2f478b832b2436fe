package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The value flags reach chartgen as helm reads them: a comma inside --set is part of the expression (not two
// flag values), and --set-string, --set-json, --set-file and --set-literal exist with helm's meaning.
func TestChartgenValueFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("tok"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"chartgen", "validate", "--set", "worker.serverUrl=https://deploy.example.com", "--set-file", "worker.registrationToken=" + token}
	for _, tc := range []struct {
		name  string
		args  []string
		valid bool
		want  string
	}{
		{"a list with commas", []string{"--set", "worker.pools={a,b}", "--set", "worker.capabilities={helm,terraform}"}, true, ""},
		{"a pool named 42", []string{"--set", "worker.pools={42}"}, false, "--set: worker.pools[0]: must be a string, not a number: quote it in YAML (\"2025\"), or give it with --set-string"},
		{"a pool named 42, as a string", []string{"--set-string", "worker.pools={42}"}, true, ""},
		{"json", []string{"--set-json", `worker.pools=["a","b"]`}, true, ""},
		{"literal", []string{"--set-literal", "worker.pools=a,b"}, false, "worker.pools: must be an array, not a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, err := cliRun(context.Background(), append(base, tc.args...)...)
			if (err == nil) != tc.valid || !strings.Contains(out, tc.want) {
				t.Fatalf("chartgen validate %v: %v\nstdout:\n%s\nstderr:\n%s", tc.args, err, out, errOut)
			}
		})
	}
}
