package jobrunner

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// BenchmarkFollowerStream: reading a finished pod's log of n sealed records (kubelet timestamps, short lines
// as `seq` prints them) into api.LogLines, per line.
func BenchmarkFollowerStream(b *testing.B) {
	key, _ := logline.NewKey()
	s, _ := logline.NewSealer(key, "op-123456")
	const n = 20000
	var sb strings.Builder
	ts := time.Now().UTC()
	for q := 1; q <= n+1; q++ {
		l := logline.Line{Seq: int64(q), Time: ts.Add(time.Duration(q) * 1234), Stream: logline.Stdout, Payload: []byte(strconv.Itoa(q))}
		if q > n {
			l = logline.Line{Seq: n, Time: ts, Stream: logline.EOS, Payload: []byte("0")}
		}
		rec, err := s.Append(nil, l)
		if err != nil {
			b.Fatal(err)
		}
		sb.WriteString(ts.Add(time.Duration(q) * 3456).Format(time.RFC3339Nano))
		sb.WriteByte(' ')
		sb.Write(rec)
		sb.WriteByte('\n')
	}
	log := sb.String()
	b.SetBytes(int64(len(log)))
	for b.Loop() {
		f := &follower{logs: &scriptedLogs{logs: []string{log}}, pod: "p", sealer: s}
		lines := 0
		if err := f.stream(context.Background(), false, true, func(api.LogLine) error { lines++; return nil }); err != nil || lines != n || f.marker() == nil {
			b.Fatalf("%d lines, marker %v: %v", lines, f.marker() != nil, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/line")
}
