package podrunner

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
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

// BenchmarkSpoolPushes: reading a spool of n records as the pusher does, a push of api.MaxLogLines at a time,
// per record.
func BenchmarkSpoolPushes(b *testing.B) {
	const n = 200000
	sp, err := newSpool(b.TempDir(), 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	defer sp.close()
	for seq := int64(1); seq <= n; seq++ {
		sp.add(seq, fmt.Appendf(nil, "%d|2026-12-07T12:54:28.331667287Z|stdout|vTIH7pjCnSB/BSZJvk2n5hq4ULVLBqlgVQTYzpuvMDGang\n", seq))
	}
	sp.flush()
	for b.Loop() {
		for after := int64(0); after < n; {
			recs, err := sp.records(after, api.MaxLogLines, api.MaxPodPushBytes)
			if err != nil || len(recs) == 0 {
				b.Fatalf("%d records after %d: %v", len(recs), after, err)
			}
			after = recordSeq(recs[len(recs)-1])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
}
