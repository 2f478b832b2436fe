package server

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/decode"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

// appendBodies are log batches as clients may send them: the worker's own encoding and hand-written variants
// the fast path must either read exactly as decode.Bytes does or leave to it.
var appendBodies = []string{
	`{"lease_id":"l-1","lines":[{"seq":1,"time":"2026-11-27T10:31:06.123456789Z","stream":"stdout","text":"hello"},{"seq":2,"time":"2026-11-27T10:31:06Z","stream":"stderr","text":"wörld ✓"}]}`,
	` { "lines" : [ { "text" : "a\"b\\c\u00e9\n" , "stream" : "system" , "seq" : 0 , "time" : "2026-01-02T03:04:05+02:00" } ] , "lease_id" : "x" } `,
	`{"lease_id":"l","lines":[]}`,
	// The worker's form up to a point, then not (the compact reader hands the line to the general one).
	`{"lease_id":"l","lines":[{"seq":1,"time":"2026-11-27T10:31:06Z","stream":"stdout","text":"a","pos":3}]}`,
	`{"lease_id":"l","lines":[{"seq":1,"time":"2026-11-27T10:31:06Z","stream":"stdout","text":"a","text":"b"}]}`,
	`{"lease_id":"l","lines":[{"seq":1,"time":"2026-11-27T10:31:06Z","stream":"stdout","Text":"a"}]}`,
	`{"lease_id":"l","lines":[{"seq":1,"time":"2026-11-27T10:31:06Z","text":"a","stream":"stdout"}]}`,
	`{"lease_id":"l","lines":[{"seq":1,"time":"2026-11-27T10:31:06Z","stream":"stdout","text":"a\u0000\"b"}]}`,
	`{"lease_id":"l","lines":[{"seq":1,"time":"2026-11-27T10:31:06Z","stream":"stdout","text":"a"} ,{"seq":2,"seq":3}]}`,
	`{"lease_id":"l"}`,
	`{}`,
	`{"lease_id":"l","lines":[{}]}`,
	`{"lease_id":"l","lines":null}`,
	`{"lease_id":"l","lines":[{"seq":1,"seq":2}]}`,
	`{"lease_id":"l","lease_id":"m"}`,
	`{"lease_id":"l","lines":[{"Seq":1}]}`,
	`{"lease_id":"l","lines":[{"se\u0071":1}]}`,
	`{"lease_id":"l","lines":[{"seq":1.0}]}`,
	`{"lease_id":"l","lines":[{"seq":1e3}]}`,
	`{"lease_id":"l","lines":[{"seq":-0}]}`,
	`{"lease_id":"l","lines":[{"seq":01}]}`,
	`{"lease_id":"l","lines":[{"seq":99999999999999999999}]}`,
	`{"lease_id":"l","lines":[{"seq":null}]}`,
	`{"lease_id":"l","lines":[{"pos":5,"seq":1}]}`,
	`{"lease_id":"l","lines":[{"time":"yesterday"}]}`,
	`{"lease_id":"l","lines":[{"time":null}]}`,
	`{"lease_id":"l","lines":[{"time":"2026-13-01T00:00:00Z"}]}`,
	`{"lease_id":"l","lines":[{"text":"bad \xff utf-8"}]}`,
	`{"lease_id":"l","lines":[{"text":"raw` + "\x01" + `control"}]}`,
	`{"lease_id":"l","lines":[{"text":"bad \x escape"}]}`,
	`{"lease_id":"l","lines":[{"text":"\ud800 lone surrogate"}]}`,
	`{"lease_id":"l","lines":[{"text":"\uDC00 lone low surrogate"}]}`,
	`{"lease_id":"l","lines":[{"text":"\uD83D\uDE00 a pair"}]}`,
	`{"lease_id":"l","lines":[{"text":"a","Text":"b"}]}`,
	`{"lease_id":"l","LEASE_ID":"m"}`,
	`{"lease_id":"l","lines":[{"text":1}]}`,
	`{"lease_id":"l","lines":[{"seq":1},]}`,
	`{"lease_id":"l","extra":true}`,
	`{"lease_id":"l"} {}`,
	`{"lease_id":"l"`,
	`[]`,
	``,
}

// checkAppendDecoding fails when decodeAppendLogs and decode.Bytes disagree on body.
func checkAppendDecoding(t *testing.T, body []byte) {
	var fast, general api.AppendLogsRequest
	ferr := decodeAppendLogs(body, &fast)
	gerr := decode.Bytes(body, &general)
	if (ferr == nil) != (gerr == nil) {
		t.Fatalf("%q: decodeAppendLogs error %v, decode.Bytes error %v", body, ferr, gerr)
	}
	if ferr != nil {
		if ferr.Error() != gerr.Error() {
			t.Errorf("%q: errors differ: %v / %v", body, ferr, gerr)
		}
		return
	}
	if diff := cmp.Diff(general, fast); diff != "" {
		t.Fatalf("%q: decodeAppendLogs differs from decode.Bytes (-general +fast):\n%s", body, diff)
	}
}

func TestDecodeAppendLogsMatchesTheGeneralDecoder(t *testing.T) {
	t.Parallel()
	for _, b := range appendBodies {
		checkAppendDecoding(t, []byte(b))
	}
	// The fast path does take the worker's batches.
	var req api.AppendLogsRequest
	if !api.DecodeAppendLogs([]byte(appendBodies[0]), &req, 10) || len(req.Lines) != 2 || req.Lines[1].Text != "wörld ✓" {
		t.Errorf("the worker's batch missed the fast path: %+v", req)
	}
}

func FuzzDecodeAppendLogs(f *testing.F) {
	for _, b := range appendBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkAppendDecoding(t, body) })
}

// BenchmarkDecodeAppendLogs: a 5,000-line batch through the fast path, beside decode.Bytes.
func BenchmarkDecodeAppendLogs(b *testing.B) {
	lines := make([]api.LogLine, 5000)
	now := time.Now().UTC()
	for i := range lines {
		lines[i] = api.LogLine{Seq: int64(i + 1), Time: now.Add(time.Duration(i) * time.Microsecond), Stream: api.StreamStdout, Text: fmt.Sprint(i + 1)}
	}
	body, err := json.Marshal(api.AppendLogsRequest{LeaseID: "lease-1", Lines: lines})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		decode func([]byte, *api.AppendLogsRequest) error
	}{
		{"fast", decodeAppendLogs},
		{"general", func(d []byte, r *api.AppendLogsRequest) error { return decode.Bytes(d, r) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				var req api.AppendLogsRequest
				if err := bc.decode(body, &req); err != nil || len(req.Lines) != 5000 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*5000), "ns/line")
		})
	}
}

// BenchmarkAppendLogsHTTP: 5,000-line batches from the worker's client to a real server on SQLite (decode,
// validate, store, reply), one batch at a time, beside the same client posting the same batches to a no-op
// handler on the same loopback (HTTP and the client's encoding alone), alternated batch by batch.
func BenchmarkAppendLogsHTTP(b *testing.B) {
	bb := setup(b, testConfig())
	bb.pool("p")
	w, _ := bb.worker("w", []string{"p"})
	bb.submit(api.OperationSpec{Pool: "p", Script: "x"})
	l, err := w.Lease(bb.ctx, time.Second)
	if err != nil || l == nil {
		b.Fatalf("lease: %v", err)
	}
	bare, err := client.New(client.Config{Server: bareServer(b), Token: "x"})
	if err != nil {
		b.Fatal(err)
	}
	lines := make([]api.LogLine, 5000)
	now := time.Now().UTC()
	var real, base time.Duration
	seq := 0
	for b.Loop() {
		for i := range lines {
			seq++
			lines[i] = api.LogLine{Seq: int64(seq), Time: now, Stream: api.StreamStdout, Text: strconv.Itoa(seq)}
		}
		start := time.Now()
		if _, err := w.AppendLogs(bb.ctx, l.Operation.ID, l.LeaseID, lines); err != nil {
			b.Fatal(err)
		}
		real += time.Since(start)
		start = time.Now()
		if _, err := bare.AppendLogs(bb.ctx, l.Operation.ID, l.LeaseID, lines); err != nil {
			b.Fatal(err)
		}
		base += time.Since(start)
	}
	n := float64(b.N * len(lines))
	b.ReportMetric(float64(real.Nanoseconds())/n, "ns/line")
	b.ReportMetric(float64(base.Nanoseconds())/n, "bare-ns/line")
	b.ReportMetric(float64(real)/float64(base), "server/bare")
	b.ReportMetric(0, "ns/op")
}

// podBodies are pod pushes as clients may send them: the runner's own encoding and hand-written variants the
// fast path must either read exactly as decode.Bytes does or leave to it.
var podBodies = []string{
	`{"records":["1|2026-11-27T10:31:06.5Z|stdout|AAAA","2|2026-11-27T10:31:06.6Z|eos|BBBB"]}`,
	` { "records" : [ "a\"b\\c\u00e9\n" , "x" ] } `,
	`{"records":[]}`,
	`{"records":null}`,
	`{}`,
	`{"records":["a"],"records":["b"]}`,
	`{"Records":["a"]}`,
	`{"rec\u006frds":["a"]}`,
	`{"records":[1]}`,
	`{"records":[null]}`,
	`{"records":["bad \xff utf-8"]}`,
	`{"records":["raw` + "\x01" + `control"]}`,
	`{"records":["\ud800 lone surrogate"]}`,
	`{"records":["a",]}`,
	`{"records":["a"],"extra":1}`,
	`{"records":["a"]} {}`,
	`{"records":["a"]`,
	`[]`,
	``,
}

// checkPodDecoding fails when decodePodLogs and decode.Bytes disagree on body.
func checkPodDecoding(t *testing.T, body []byte) {
	var fast, general api.PodLogsRequest
	ferr := decodePodLogs(body, &fast)
	gerr := decode.Bytes(body, &general)
	if (ferr == nil) != (gerr == nil) {
		t.Fatalf("%q: decodePodLogs error %v, decode.Bytes error %v", body, ferr, gerr)
	}
	if ferr != nil {
		if ferr.Error() != gerr.Error() {
			t.Errorf("%q: errors differ: %v / %v", body, ferr, gerr)
		}
		return
	}
	if diff := cmp.Diff(general, fast); diff != "" {
		t.Fatalf("%q: decodePodLogs differs from decode.Bytes (-general +fast):\n%s", body, diff)
	}
}

func TestDecodePodLogsMatchesTheGeneralDecoder(t *testing.T) {
	t.Parallel()
	for _, b := range podBodies {
		checkPodDecoding(t, []byte(b))
	}
	// The fast path does take the runner's pushes.
	var req api.PodLogsRequest
	if !api.DecodePodLogs([]byte(podBodies[0]), &req, 10) || len(req.Records) != 2 || req.Records[1] != "2|2026-11-27T10:31:06.6Z|eos|BBBB" {
		t.Errorf("the runner's push missed the fast path: %+v", req)
	}
}

func FuzzDecodePodLogs(f *testing.F) {
	for _, b := range podBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkPodDecoding(t, body) })
}

// BenchmarkDecodePodLogs: a push of 5,000 records through the fast path, beside decode.Bytes.
func BenchmarkDecodePodLogs(b *testing.B) {
	key, _ := logline.NewKey()
	s, _ := logline.NewSealer(key, "op-bench")
	req := api.PodLogsRequest{Records: make([]string, 5000)}
	for i := range req.Records {
		rec, err := s.Append(nil, logline.Line{Seq: int64(i + 1), Time: time.Now(), Stream: logline.Stdout, Payload: []byte(strconv.Itoa(i + 1))})
		if err != nil {
			b.Fatal(err)
		}
		req.Records[i] = string(rec)
	}
	body, err := json.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		decode func([]byte, *api.PodLogsRequest) error
	}{
		{"fast", decodePodLogs},
		{"general", func(d []byte, r *api.PodLogsRequest) error { return decode.Bytes(d, r) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				var r api.PodLogsRequest
				if err := bc.decode(body, &r); err != nil || len(r.Records) != 5000 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*5000), "ns/record")
		})
	}
}
