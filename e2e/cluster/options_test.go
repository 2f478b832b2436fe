package cluster_test

import (
	"context"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/e2e/cluster"
)

// Bad options are refused before anything starts, with an error that names the field.
func TestStartRejectsBadOptions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts cluster.Options
		want string
	}{
		{"negative nodes", cluster.Options{Nodes: -1}, "cluster.Options.Nodes"},
		{"bad cpu", cluster.Options{Node: cluster.NodeOptions{CPU: "four"}}, "NodeOptions.CPU"},
		{"bad memory", cluster.Options{Node: cluster.NodeOptions{Memory: "lots"}}, "NodeOptions.Memory"},
		{"bad log size", cluster.Options{Node: cluster.NodeOptions{ContainerLogMaxSize: "big"}}, "NodeOptions.ContainerLogMaxSize"},
		{"one log file", cluster.Options{Node: cluster.NodeOptions{ContainerLogMaxFiles: 1}}, "NodeOptions.ContainerLogMaxFiles"},
		{"missing image file", cluster.Options{Images: map[string]cluster.Image{"x:1": {Files: map[string]string{"/bin/x": "/nonexistent/octo"}}}}, `cluster.Options.Images["x:1"].Files["/bin/x"]`},
		{"relative image path", cluster.Options{Images: map[string]cluster.Image{"x:1": {Files: map[string]string{"bin/x": "/bin/sh"}}}}, "must be absolute"},
		{"missing root", cluster.Options{Images: map[string]cluster.Image{"x:1": {Root: "/nonexistent/root"}}}, `cluster.Options.Images["x:1"].Root`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := cluster.Start(context.Background(), tc.opts)
			if err == nil {
				c.Stop()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}
