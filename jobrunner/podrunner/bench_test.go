package podrunner

import (
	"context"
	"io"
	"testing"

	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// BenchmarkRunnerLines: the runner turning a script's n short lines (`seq`) into sealed records on a
// discarded stdout, per line: the pod's own cost, which bounds how fast a live log can be followed.
func BenchmarkRunnerLines(b *testing.B) {
	key, _ := logline.NewKey()
	const n = 200000
	for b.Loop() {
		r, err := New(Spec{OperationID: "op-bench", Script: "seq 1 200000"}, key, b.TempDir(), io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		if code, err := r.Run(context.Background()); code != 0 || err != nil {
			b.Fatalf("exit %d: %v", code, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/line")
}
