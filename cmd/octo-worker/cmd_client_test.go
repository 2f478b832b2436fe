package main

import (
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// A command on one object wants exactly one argument, and says so before it looks for a token or a server.
// Not parallel: urfave/cli applies its package-level HelpFlag in every run, so two apps running at once in
// one process race inside the library (go test -race reports it).
func TestOneArgumentRequired(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ops", "show"}, "give exactly one operation id (see --help)"},
		{[]string{"ops", "logs", "a", "b"}, "give exactly one operation id (see --help)"},
		{[]string{"pool", "create"}, "give exactly one pool name (see --help)"},
		{[]string{"token", "revoke"}, "give exactly one token id (see --help)"},
		{[]string{"deployments", "cancel", "a", "b"}, "give exactly one deployment id (see --help)"},
		{[]string{"workers", "drain"}, "give exactly one worker id (see --help)"},
		{[]string{"workers", "remove"}, "give exactly one worker id (see --help)"},
		{[]string{"workers", "remove", "a", "b"}, "give exactly one worker id (see --help)"},
		{[]string{"workers", "show"}, "give exactly one worker id (see --help)"},
		{[]string{"workers", "check", "a", "b"}, "give exactly one worker id (see --help)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := cliRun(t.Context(), append(tt.args, "--server", "http://127.0.0.1:1")...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
				t.Fatalf("error %v (exit code %d), want %q with exit code 2", err, exitCode(err), tt.want)
			}
		})
	}
}

// ops show names the step's profile, its packages and what its script used, the escape applied to each.
func TestShowOperationDetails(t *testing.T) {
	var b strings.Builder
	showOperation(&b, api.Operation{ID: "op-1", OperationSpec: api.OperationSpec{Pool: "web", Profile: "gpu",
		Packages: []string{"chart@1.4.0", "evil\x1b[2J@1"}},
		Usage: &api.Usage{PeakMemoryBytes: 300 << 20, CPUSeconds: 1.5, Source: api.UsageCgroup}})
	for _, want := range []string{"Profile:\tgpu\n", "Package:\tchart@1.4.0\n", `Package:` + "\tevil\\x1b[2J@1\n",
		"Usage:\tpeak memory 300Mi, 1.50 CPU seconds (cgroup)\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("ops show printed:\n%s\nwant it to contain %q", b.String(), want)
		}
	}
}
