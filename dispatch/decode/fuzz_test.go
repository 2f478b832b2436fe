package decode

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// The fuzz targets feed arbitrary bodies to the decoders and validators the server runs on every request.
// Properties: nothing panics; every refusal is an *Error with a message; a refusal of a body that is one
// valid JSON object names a field unless the fault is the body as a whole; what decodes re-encodes and
// decodes to the same value. `make test` runs the seeds; run one for a while with
// go test ./dispatch/decode -run '^$' -fuzz FuzzDecodeOperationSpec -fuzztime 1m

func FuzzDecodeOperationSpec(f *testing.F) {
	fuzzDecode(f, func(spec *api.OperationSpec) error { return validate.OperationSpec("", spec, false) },
		`{"pool":"p","script":"echo hi"}`,
		`{"name":"n","pool":"p","script":"x","syntax":"bash","files":[{"path":"a","content":"aGk=","mode":420}],`+
			`"variables":[{"name":"A","value":"v","sensitive":true}],"image":"alpine:3","requests":{"cpu":"1","memory":"1Gi"},`+
			`"timeout_seconds":10,"capabilities":["docker"]}`,
		`{"pool":"p","script":"x","imag":"a"}`,
		`{"pool":"p","script":"x","timeout_seconds":"1"}`,
		`{"files":[{"path":"../x","content":"!!"}]}`,
		`{"requests":{"cpu":"-1"}}`,
		`[]`, `{`, `null`, ``,
	)
}

func FuzzDecodeDeploymentSpec(f *testing.F) {
	fuzzDecode(f, validate.DeploymentSpec,
		`{"name":"d","pool":"p","steps":[{"script":"a"},{"script":"b","pool":"q"}]}`,
		`{"name":"d","steps":[{"script":"a","bogus":1}]}`,
		`{"name":"d","steps":{}}`,
		`{"name":1}`,
	)
}

func FuzzDecodeAppendLogs(f *testing.F) {
	fuzzDecode(f, validate.AppendLogs,
		`{"lease_id":"l","lines":[{"seq":1,"time":"2030-01-01T00:00:00Z","stream":"stdout","text":"hi"}]}`,
		`{"lease_id":"l","lines":[{"seq":0,"stream":"system","text":"waiting for capacity"}]}`,
		`{"lease_id":"l","lines":[{"seq":-1,"time":"bad"}]}`,
		`{"lease_id":"l","lines":[{"seq":1e3}]}`,
	)
}

func FuzzDecodeWorkerRequests(f *testing.F) {
	for _, s := range []string{
		`{"lease_id":"l","state":"succeeded","exit_code":0,"last_seq":3}`,
		`{"version":"1.0.0","capacity":2,"running":["op-1"],"health":{"ok":true},"draining":false}`,
		`{"name":"w","pools":["p"],"version":"1","capabilities":["kubernetes-job"],"capacity":1}`,
		`{"wait_seconds":30,"request_id":"r"}`,
		`{"exit_code":"0"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var res api.ResultRequest
		if check(t, body, &res) {
			_ = validate.Result(&res)
		}
		var hb api.HeartbeatRequest
		if check(t, body, &hb) {
			_ = validate.Heartbeat(&hb)
		}
		var reg api.RegisterRequest
		if check(t, body, &reg) {
			_ = validate.Register(&reg)
		}
		var lease api.LeaseRequest
		if check(t, body, &lease) {
			_ = validate.Lease(&lease)
		}
	})
}

// fuzzDecode fuzzes decoding into a T from the seeds, checking the properties above, then validating what
// decoded (validation must not panic; its verdict is free).
func fuzzDecode[T any](f *testing.F, validate func(*T) error, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v T
		if check(t, body, &v) {
			_ = validate(&v)
		}
	})
}

// check decodes body into v and asserts the properties; it reports whether the body decoded.
func check[T any](t *testing.T, body []byte, v *T) bool {
	t.Helper()
	err := Bytes(body, v)
	if err != nil {
		var de *Error
		if !errors.As(err, &de) || de.Message == "" {
			t.Fatalf("Bytes(%q) = %v: want an *Error with a message", body, err)
		}
		// The body is one valid JSON object but did not fit the type: the error must point at a field.
		var obj map[string]json.RawMessage
		if json.Unmarshal(body, &obj) == nil && obj != nil && de.Field == "" {
			t.Fatalf("Bytes(%q) = %q: a refusal of a well-formed object must name the field", body, de.Message)
		}
		return false
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("re-encoding %+v: %v", v, err)
	}
	var round T
	if err := Bytes(again, &round); err != nil {
		t.Fatalf("re-decoding %s: %v", again, err)
	}
	twice, _ := json.Marshal(round)
	if string(twice) != string(again) {
		t.Fatalf("round trip changed the value:\n%s\n%s", again, twice)
	}
	return true
}
