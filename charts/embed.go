// Package charts embeds the octo-worker Helm chart (charts/octo-worker) into the binary, so that chartgen can
// render, validate and install it with no files beside the binary. go:embed cannot reach parent directories,
// hence this small package next to the chart.
package charts

import (
	"embed"
	"io/fs"
)

//go:embed all:octo-worker
var files embed.FS

// ChartDir is the chart's directory name inside FS.
const ChartDir = "octo-worker"

// FS returns the chart's files; paths start with ChartDir.
func FS() fs.FS { return files }
