package client

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// TestAppendLogsBodyMatchesEncodingJSON: the hand-written body is what json.Marshal writes for the request.
func TestAppendLogsBodyMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 10, 31, 6, 123456789, time.UTC)
	for _, tc := range []struct {
		lease string
		lines []api.LogLine
	}{
		{"l-1", nil},
		{"l-1", []api.LogLine{}},
		{`odd "lease" <id>`, []api.LogLine{{Seq: 1, Time: now, Stream: api.StreamStdout, Text: "one"}}},
		{"l-2", []api.LogLine{{Seq: 1, Time: now, Stream: api.StreamStdout, Text: "a \"b\" <c> & ü\n\xff"}, {Seq: 0, Stream: api.StreamSystem, Text: ""}}},
	} {
		want, err := json.Marshal(api.AppendLogsRequest{LeaseID: tc.lease, Lines: append([]api.LogLine{}, tc.lines...)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendLogsBody(tc.lease, tc.lines)
		if err != nil || string(got) != string(want) {
			t.Errorf("appendLogsBody(%q, %d lines) =\n%s, %v\nwant\n%s", tc.lease, len(tc.lines), got, err, want)
		}
	}
}
