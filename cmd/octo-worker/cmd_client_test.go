package main

import (
	"strings"
	"testing"
)

// A command on one object wants exactly one argument, and says so before it looks for a token or a server.
func TestOneArgumentRequired(t *testing.T) {
	t.Parallel()
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
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			_, _, err := cliRun(t.Context(), append(tt.args, "--server", "http://127.0.0.1:1")...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
				t.Fatalf("error %v (exit code %d), want %q with exit code 2", err, exitCode(err), tt.want)
			}
		})
	}
}
