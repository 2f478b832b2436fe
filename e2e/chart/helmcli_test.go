package chart

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/e2e/cluster"
)

// chartDir is the chart as shipped in the repository, the directory a user points the upstream helm at.
const chartDir = "../../charts/octo-worker"

// Every example values file passes the upstream `helm lint --strict`, and the upstream `helm template` renders
// it byte for byte as `octo-worker chartgen render` does (the Helm SDK on the embedded chart), for the release
// and namespace the chartgen tests use. Neither needs the cluster: they run helm from $OCTO_HELM with no
// kubeconfig.
func TestHelmLintAndTemplateExamples(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../values/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example values files: %v", err)
	}
	const release, ns = "ow", "deploy"
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			out, errOut, err := cluster.RunTool(t, nil, "helm", "lint", "--strict", chartDir, "-f", f)
			if err != nil || !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Errorf("helm lint --strict: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
			}
			helm, errOut, err := cluster.RunTool(t, nil, "helm", "template", release, chartDir, "--namespace", ns, "-f", f)
			if err != nil {
				t.Fatalf("helm template: %v\nstderr:\n%s", err, errOut)
			}
			rendered := octo(t, nil, "chartgen", "render", "-f", f, "--release", release, "--namespace", ns)
			if helm != rendered {
				t.Errorf("helm template and octo-worker chartgen render differ (-helm +octo-worker):\n%s",
					cmp.Diff(strings.SplitAfter(helm, "\n"), strings.SplitAfter(rendered, "\n")))
			}
		})
	}
}
