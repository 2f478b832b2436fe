package chartgen

import (
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// RequestsUpgrade is the helm command, shell-quoted, that sets scriptPods.resources.requests on an installed
// release and keeps its other values (what `octo-worker requests advise` and the portal print).
func RequestsUpgrade(release, namespace, chart, cpu, memory string) string {
	args := []string{"helm", "upgrade", release, chart, "--namespace", namespace, "--reuse-values",
		"--set", "scriptPods.resources.requests.cpu=" + cpu,
		"--set", "scriptPods.resources.requests.memory=" + memory}
	for i, s := range args {
		args[i] = ShellQuote(s)
	}
	return strings.Join(args, " ")
}

// AboveDefaultMax names the requests above the chart's default scriptPods.resources.maxRequests, as "cpu 2",
// which the chart refuses unless the release raised maxRequests.
func AboveDefaultMax(cpu, memory string) []string {
	limit := Defaults().ScriptPods.Resources.MaxRequests
	var out []string
	for _, c := range []struct{ name, want, max string }{{"cpu", cpu, string(limit.CPU)}, {"memory", memory, string(limit.Memory)}} {
		a, err1 := resource.ParseQuantity(c.want)
		m, err2 := resource.ParseQuantity(c.max)
		if err1 == nil && err2 == nil && a.Cmp(m) > 0 {
			out = append(out, c.name+" "+c.max)
		}
	}
	return out
}
