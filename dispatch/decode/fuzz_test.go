package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// The fuzz targets feed arbitrary bodies to the decoders and validators the server runs on every request.
// Properties: nothing panics; every refusal is an *Error with a message; a refusal of a body that is one
// valid JSON object names a field unless the fault is the body as a whole; what decodes re-encodes and
// decodes to the same value; what decodes was valid UTF-8 and held no key twice (in any case), so that
// encoding/json changed nothing in it silently. `make test` runs the seeds; run one for a while with
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
		`{"pool":"p","script":"true","SCRIPT":"rm -rf /tmp/x"}`,
		`{"pool":"p","script":"true","script":"x"}`,
		"{\"pool\":\"p\",\"script\":\"x\",\"variables\":[{\"name\":\"A\",\"value\":\"\xff\",\"sensitive\":true}]}",
		`{"pool":"p","script":"\ud800"}`,
		`{"pool":"p","script":"\ud83d\ude00"}`,
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
		`{"lease_id":"l","lines":[{"seq":1,"text":"\udc00"}]}`,
		`{"lease_id":"l","lines":[{"seq":1,"text":"a","Text":"b"}]}`,
		`{"lease_id":"l","lines":[{"seq":1,"time":"9999-12-31T00:00:00Z"}]}`,
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
	if !utf8.Valid(body) {
		t.Fatalf("Bytes(%q) accepted invalid UTF-8", body)
	}
	if k, ok := repeatedKey(body); ok {
		t.Fatalf("Bytes(%q) accepted the key %q twice", body, k)
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

// repeatedKey finds a key given twice in one object (compared as encoding/json matches keys to fields, in
// any case) with encoding/json's own tokenizer: a second opinion beside the decoder's checker.
func repeatedKey(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	type level struct {
		object bool
		keys   []string
		expect bool // the next string token is a key
	}
	var stack []*level
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch tok := tok.(type) {
		case json.Delim:
			if tok == '{' || tok == '[' {
				stack = append(stack, &level{object: tok == '{', expect: tok == '{'})
			} else {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].expect = true
				}
			}
			continue
		case string:
			if top != nil && top.object && top.expect {
				for _, k := range top.keys {
					if strings.EqualFold(k, tok) {
						return tok, true
					}
				}
				top.keys = append(top.keys, tok)
				top.expect = false
				continue
			}
		}
		if top != nil && top.object {
			top.expect = true
		}
	}
}
