package decode

import (
	"errors"
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
