package chartgen

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"

	"github.com/octo-worker/octo-worker/charts"
)

// EmbeddedChart loads the chart compiled into the binary.
func EmbeddedChart() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	root := charts.ChartDir
	err := fs.WalkDir(charts.FS(), root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(charts.FS(), p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: strings.TrimPrefix(p, root+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the embedded chart: %w", err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading the embedded chart: %w", err)
	}
	return ch, nil
}

// LoadChart loads a chart from a directory or a .tgz archive, or the embedded chart when location is "".
func LoadChart(location string) (*chart.Chart, error) {
	if location == "" {
		return EmbeddedChart()
	}
	ch, err := loader.Load(location)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", location, err)
	}
	return ch, nil
}

// LoadChartArchive loads a chart from .tgz bytes (as the dispatch server serves it).
func LoadChartArchive(archive []byte) (*chart.Chart, error) {
	ch, err := loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return nil, fmt.Errorf("loading chart archive: %w", err)
	}
	return ch, nil
}

// RenderOptions name the release a chart is rendered for.
type RenderOptions struct {
	Release   string
	Namespace string
}

// Rendered is a chart rendered for one release.
type Rendered struct {
	Manifest string // all manifests, "---"-separated, in Helm's install order
	Notes    string // the rendered NOTES.txt
}

// Render renders the chart with the user's values (Loaded.User) through the Helm SDK, as `helm template`
// does, without a cluster: the chart's values.yaml supplies the defaults, and Helm checks the result against
// the chart's values.schema.json.
func Render(ctx context.Context, ch *chart.Chart, opts RenderOptions, user map[string]any) (Rendered, error) {
	cfg := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...any) {},
	}
	inst := action.NewInstall(cfg)
	inst.DryRun = true
	inst.ClientOnly = true
	inst.Replace = true
	inst.IncludeCRDs = true
	inst.ReleaseName = opts.Release
	inst.Namespace = opts.Namespace
	rel, err := inst.RunWithContext(ctx, ch, user)
	if err != nil {
		return Rendered{}, fmt.Errorf("rendering chart %s: %w", ch.Name(), err)
	}
	var b strings.Builder
	b.WriteString(rel.Manifest)
	for _, h := range rel.Hooks {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return Rendered{Manifest: b.String(), Notes: rel.Info.Notes}, nil
}

// Package writes the chart as a .tgz archive into dir, with version and appVersion set when not empty, and
// returns the archive's path. Self-update fetches such archives from the dispatch server.
func Package(ch *chart.Chart, version, appVersion, dir string) (string, error) {
	if version != "" {
		ch.Metadata.Version = strings.TrimPrefix(version, "v")
	}
	if appVersion != "" {
		ch.Metadata.AppVersion = appVersion
	}
	if err := ch.Validate(); err != nil {
		return "", fmt.Errorf("checking chart metadata: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating output directory: %w", err)
	}
	p, err := chartutil.Save(ch, dir)
	if err != nil {
		return "", fmt.Errorf("packaging chart: %w", err)
	}
	return p, nil
}
