package main

import (
	"strings"
	"testing"
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
