package decode

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

func TestBytesErrorsNameTheField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		into  func() any
		body  string
		field string
	}{
		{"unknown top-level field", op, `{"pool":"p","script":"x","imag":"alpine"}`, "imag"},
		{"unknown nested field", dep, `{"name":"d","steps":[{"script":"a"},{"script":"b","timeout":3}]}`, "steps[1].timeout"},
		{"wrong type", op, `{"pool":"p","script":"x","timeout_seconds":"10"}`, "timeout_seconds"},
		{"wrong type in an array", logs, `{"lease_id":"l","lines":[{"seq":1},{"seq":"two"}]}`, "lines[1].seq"},
		{"fraction for an integer", logs, `{"lease_id":"l","lines":[{"seq":1.5}]}`, "lines[0].seq"},
		{"integer overflow", op, `{"timeout_seconds":1e999}`, "timeout_seconds"},
		{"negative file mode", op, `{"files":[{"path":"a","content":"","mode":-1}]}`, "files[0].mode"},
		{"bad base64", op, `{"files":[{"path":"a","content":"***"}]}`, "files[0].content"},
		{"bad time", logs, `{"lines":[{"seq":1,"time":"yesterday"}]}`, "lines[0].time"},
		{"object for a string", op, `{"pool":{"name":"p"}}`, "pool"},
		{"string for an array", op, `{"capabilities":"docker"}`, "capabilities"},
		{"nested object wrong", op, `{"requests":{"cpu":1}}`, "requests.cpu"},
		{"variables not objects", op, `{"variables":["A=1"]}`, "variables[0]"},
		{"embedded spec field unknown in a step", dep, `{"steps":[{"state":"succeeded"}]}`, "steps[0].state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Bytes([]byte(tt.body), tt.into())
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("Bytes(%s) error = %v, want *Error", tt.body, err)
			}
			if de.Field != tt.field || de.Message == "" {
				t.Errorf("Bytes(%s) = field %q (%q), want field %q", tt.body, de.Field, de.Message, tt.field)
			}
		})
	}
}

func TestBytesWholeBodyErrors(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"", "   ", "[]", `"x"`, "null", "{", `{"pool":"p"} {"pool":"q"}`, `{"pool":"p"}]`, `{"pool":"p",}`} {
		var spec api.OperationSpec
		err := Bytes([]byte(body), &spec)
		var de *Error
		if !errors.As(err, &de) || de.Message == "" {
			t.Errorf("Bytes(%q) error = %v, want a whole-body *Error", body, err)
		}
	}
}

func TestBytesDecodes(t *testing.T) {
	t.Parallel()
	body := `{"name":"deploy","pool":"web","script":"echo hi","syntax":"sh","files":[{"path":"a/b.txt","content":"aGk=","mode":420}],
		"variables":[{"name":"A","value":"1","sensitive":true}],"image":"alpine:3","requests":{"cpu":"250m"},"timeout_seconds":60,
		"capabilities":["kubernetes-job"]}`
	var got api.OperationSpec
	if err := Bytes([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := api.OperationSpec{Name: "deploy", Pool: "web", Script: "echo hi", Syntax: "sh",
		Files:     []api.File{{Path: "a/b.txt", Content: []byte("hi"), Mode: 420}},
		Variables: []api.Variable{{Name: "A", Value: "1", Sensitive: true}}, Image: "alpine:3",
		Requests: &api.Resources{CPU: "250m"}, TimeoutSeconds: 60, Capabilities: []string{"kubernetes-job"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded spec (-want +got):\n%s", diff)
	}
}

func op() any   { return new(api.OperationSpec) }
func dep() any  { return new(api.DeploymentSpec) }
func logs() any { return new(api.AppendLogsRequest) }

// TestBytesRefusesWhatEncodingJSONChangesSilently: encoding/json keeps the last of repeated keys (matching
// keys to fields regardless of case) and replaces invalid UTF-8 and lone surrogates with U+FFFD. Each of
// these would store something other than what a reader of the body sees; Bytes refuses them, naming the field.
func TestBytesRefusesWhatEncodingJSONChangesSilently(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		into  func() any
		body  string
		field string
		text  string
	}{
		{"key repeated", op, `{"pool":"p","script":"true","script":"rm -rf /tmp/x"}`, "script", "given twice"},
		{"key repeated in another case", op, `{"pool":"p","script":"true","SCRIPT":"rm -rf /tmp/x"}`, "SCRIPT", "differ only in case"},
		{"key repeated through Unicode folding", op, `{"pool":"p","script":"true","ſcript":"x"}`, `["ſcript"]`, "differ only in case"},
		{"key repeated through an escape", op, `{"pool":"p","script":"true","scrip\u0074":"x"}`, "script", "given twice"},
		{"nested key repeated", dep, `{"name":"d","steps":[{"script":"a"},{"script":"b","Image":"x","image":"y"}]}`, "steps[1].image", "differ only in case"},
		{"key repeated in a variable", op, `{"variables":[{"name":"A","value":"1","Value":"2"}]}`, "variables[0].Value", "differ only in case"},
		{"invalid UTF-8 in a sensitive value", op, "{\"variables\":[{\"name\":\"P\",\"value\":\"se\xffcret\",\"sensitive\":true}]}", "variables[0].value", "UTF-8"},
		{"truncated UTF-8", op, "{\"script\":\"echo \xe2\x82\"}", "script", "UTF-8"},
		{"invalid UTF-8 in a key", op, "{\"scr\xffipt\":\"x\"}", "[\"scr\uFFFD\"]", "UTF-8"},
		{"lone high surrogate", logs, `{"lease_id":"l","lines":[{"seq":1,"text":"a\ud800b"}]}`, "lines[0].text", "lone surrogate"},
		{"lone low surrogate", logs, `{"lease_id":"l","lines":[{"seq":1,"text":"\udc00"}]}`, "lines[0].text", "lone surrogate"},
		{"high surrogate at the end", logs, `{"lease_id":"l","lines":[{"seq":1,"text":"\ud83d"}]}`, "lines[0].text", "lone surrogate"},
		{"two high surrogates", logs, `{"lease_id":"l","lines":[{"seq":1,"text":"\ud83d\ud83d"}]}`, "lines[0].text", "lone surrogate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Bytes([]byte(tt.body), tt.into())
			var de *Error
			if !errors.As(err, &de) || de.Field != tt.field || !strings.Contains(de.Message, tt.text) {
				t.Errorf("Bytes(%q) = %v; want field %q, a message containing %q", tt.body, err, tt.field, tt.text)
			}
		})
	}
	// What stays accepted: a surrogate pair, U+FFFD itself (escaped and as is).
	var l api.AppendLogsRequest
	if err := Bytes([]byte(`{"lease_id":"l","lines":[{"seq":1,"text":"\ud83d\ude00 \ufffd �"},{"seq":2,"text":"b"}]}`), &l); err != nil ||
		l.Lines[0].Text != "😀 \ufffd \ufffd" {
		t.Errorf("a surrogate pair and U+FFFD: %+v, %v", l, err)
	}
}

// BenchmarkStrictCheck: the pass that refuses repeated keys and invalid strings, beside the whole of Bytes,
// on a 5,000-line log batch (the largest body most routes see).
func BenchmarkStrictCheck(b *testing.B) {
	lines := make([]api.LogLine, 5000)
	for i := range lines {
		lines[i] = api.LogLine{Seq: int64(i + 1), Stream: api.StreamStdout, Text: strings.Repeat("ünïcödé ", 8)}
	}
	body, err := json.Marshal(api.AppendLogsRequest{LeaseID: "lease-1", Lines: lines})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("check", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if e := strictCheck(body); e != nil {
				b.Fatal(e)
			}
		}
	})
	b.Run("bytes", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var req api.AppendLogsRequest
			if err := Bytes(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
