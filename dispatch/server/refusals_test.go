package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// raw sends one request without the client (no retries, any body) and returns the status and error body.
func (b *bundle) raw(method, path, token string, body []byte) (int, api.Error) {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.ctx, method, b.url+path, bytes.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e api.Error
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(data, &e); err != nil {
			b.t.Fatalf("%s %s: %d with a body that is not an api.Error: %q", method, path, resp.StatusCode, data)
		}
		if e.Error == "" {
			b.t.Fatalf("%s %s: %d without a message", method, path, resp.StatusCode)
		}
	}
	return resp.StatusCode, e
}

func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	b.pool("q")
	w, _ := b.worker("w", []string{"p"})
	other, _ := b.worker("other", []string{"p"})
	regP, err := b.admin.CreateToken(b.ctx, []string{"p"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	revoked, _ := b.admin.CreateToken(b.ctx, []string{"p"}, 0)
	if _, err := b.admin.RevokeToken(b.ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	expiredSecret := "owr_expired-token-for-the-test"
	if err := b.st.CreateToken(b.ctx, store.Token{ID: "tok-expired", Hash: hashToken(expiredSecret), Pools: []string{"p"},
		CreatedAt: time.Now().Add(-48 * time.Hour), ExpiresAt: time.Now().Add(-24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	workerToken, _ := b.register("x", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	reg := []byte(`{"name":"w","version":"1","capacity":1}`)
	logs := []byte(fmt.Sprintf(`{"lease_id":%q,"lines":[]}`, l.LeaseID))
	tests := []struct {
		name         string
		method, path string
		token        string
		body         []byte
		status       int
		code         string
		contains     string
	}{
		{"no token", "GET", "/api/v1/pools", "", nil, 401, "", "missing bearer token"},
		{"wrong token", "GET", "/api/v1/pools", "nope-nope-nope", nil, 401, "", "invalid token"},
		{"worker token on an admin endpoint", "GET", "/api/v1/operations", workerToken, nil, 403, "", "needs the admin token"},
		{"worker token submitting", "POST", "/api/v1/operations", workerToken, []byte(`{"pool":"p","script":"x"}`), 403, "", "needs the admin token"},
		{"registration token on an admin endpoint", "GET", "/api/v1/workers", regP.Token, nil, 403, "", "registration token"},
		{"admin token on a worker endpoint", "POST", "/api/v1/worker/lease", adminToken, []byte(`{}`), 403, "", "worker token"},
		{"registration token on a worker endpoint", "POST", "/api/v1/worker/lease", regP.Token, []byte(`{}`), 401, "", "invalid worker token"},
		{"admin token registering", "POST", "/api/v1/worker/register", adminToken, reg, 403, "", "registration token"},
		{"revoked registration token", "POST", "/api/v1/worker/register", revoked.Token, reg, 401, "", "revoked"},
		{"expired registration token", "POST", "/api/v1/worker/register", expiredSecret, reg, 401, "", "expired"},
		{"registering outside the token's pools", "POST", "/api/v1/worker/register", regP.Token,
			[]byte(`{"name":"w","pools":["q"],"version":"1","capacity":1}`), 403, "", `cannot register into "q"`},
		{"another worker's operation", "POST", "/api/v1/worker/operations/" + op.ID + "/logs", workerToken, logs, 403, api.CodeNotLeased, "not leased"},
		{"a forged lease id", "POST", "/api/v1/worker/operations/" + op.ID + "/logs", workerToken,
			[]byte(`{"lease_id":"lease-forged","lines":[]}`), 403, api.CodeNotLeased, ""},
		{"unknown operation", "POST", "/api/v1/worker/operations/op-none/result", workerToken,
			[]byte(`{"lease_id":"x","state":"failed"}`), 404, "", "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, e := b.raw(tt.method, tt.path, tt.token, tt.body)
			if status != tt.status || e.Code != tt.code || !strings.Contains(e.Error, tt.contains) {
				t.Errorf("%s %s = %d %+v; want %d code %q containing %q", tt.method, tt.path, status, e, tt.status, tt.code, tt.contains)
			}
		})
	}
	// The other worker was refused on w's lease with w's own lease id, too.
	if _, err := other.Result(b.ctx, op.ID, api.ResultRequest{LeaseID: l.LeaseID, State: api.StateFailed}); !api.IsNotLeased(err) {
		t.Errorf("another worker's result: %v, want not_leased", err)
	}
	if st := b.op(op.ID).State; st != api.StateLeased {
		t.Errorf("refused calls changed the operation to %s", st)
	}
	// Registering with a valid token and no pools takes the token's pools.
	okReg, err := b.client(regP.Token).Register(b.ctx, api.RegisterRequest{Name: "w2", Version: "1", Capacity: 1})
	if err != nil || len(okReg.Pools) != 1 || okReg.Pools[0] != "p" || okReg.HeartbeatSeconds != 5 || okReg.LeaseTTLSeconds != 120 {
		t.Errorf("Register = %+v, %v", okReg, err)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	b.pool("k8s")
	b.worker("plain", []string{"k8s"}, "kubernetes-job")
	wToken, _ := b.register("w", []string{"p"})
	w := b.client(wToken)
	b.submit(api.OperationSpec{Pool: "p"})
	l := b.lease(w)
	opPath := "/api/v1/worker/operations/" + l.Operation.ID
	regToken, err := b.admin.CreateToken(b.ctx, []string{"p"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	bigFile := base64.StdEncoding.EncodeToString(make([]byte, 800<<10))
	mib := strings.Repeat("x", 1<<20)
	tests := []struct {
		name   string
		method string
		path   string
		token  string
		body   string
		status int
		field  string
		code   string
		text   string
	}{
		{"unknown field", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"x","imag":"alpine"}`, 400, "imag", "", "unknown field"},
		{"nested unknown field", "POST", "/api/v1/deployments", adminToken, `{"name":"d","pool":"p","steps":[{"script":"x","retries":2}]}`, 400, "steps[0].retries", "", "unknown field"},
		{"wrong type", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"x","timeout_seconds":"60"}`, 400, "timeout_seconds", "", "wrong type"},
		{"malformed JSON", "POST", "/api/v1/operations", adminToken, `{"pool":"p",`, 400, "", "", "malformed JSON"},
		{"trailing data", "POST", "/api/v1/pools", adminToken, `{"name":"a"}{"name":"b"}`, 400, "", "", "after the JSON object"},
		{"not an object", "POST", "/api/v1/pools", adminToken, `["a"]`, 400, "", "", "JSON object"},
		{"missing script", "POST", "/api/v1/operations", adminToken, `{"pool":"p"}`, 422, "script", "", "required"},
		{"missing pool", "POST", "/api/v1/operations", adminToken, `{"script":"x"}`, 422, "pool", "", "required"},
		{"unknown pool", "POST", "/api/v1/operations", adminToken, `{"pool":"nope","script":"x"}`, 422, "pool", "", "pool create nope"},
		{"invalid image", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"x","image":"UPPER/Case:!"}`, 422, "image", "", "not a valid image reference"},
		{"invalid quantity", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"x","requests":{"cpu":"two"}}`, 422, "requests.cpu", "", "quantity"},
		{"operation too large for a Secret", "POST", "/api/v1/operations", adminToken,
			`{"pool":"p","script":"x","files":[{"path":"a.bin","content":"` + bigFile + `"},{"path":"b.bin","content":"` + base64.StdEncoding.EncodeToString(make([]byte, 200<<10)) + `"}]}`,
			422, "files[0].content", api.CodeTooLarge, "Kubernetes Secret"},
		{"body over 1 MiB", "POST", "/api/v1/pools", adminToken, `{"name":"p","description":"` + mib + `"}`, 413, "", api.CodeTooLarge, "1 MiB"},
		{"body over 2 MiB for an operation", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"` + mib + mib + `"}`, 413, "", api.CodeTooLarge, "2 MiB"},
		{"docker capability", "POST", "/api/v1/operations", adminToken, `{"pool":"k8s","script":"docker build .","capabilities":["docker"]}`,
			422, "capabilities[0]", api.CodeCapability, "no Docker daemon"},
		{"other missing capability", "POST", "/api/v1/deployments", adminToken, `{"name":"d","pool":"k8s","steps":[{"script":"x"},{"script":"y","capabilities":["gpu"]}]}`,
			422, "steps[1].capabilities[0]", api.CodeCapability, `"gpu"`},
		{"duplicate pool", "POST", "/api/v1/pools", adminToken, `{"name":"p"}`, 409, "name", api.CodeExists, "already exists"},
		{"bad pool name", "POST", "/api/v1/pools", adminToken, `{"name":"Web Servers"}`, 422, "name", "", "pool name"},
		{"token for an unknown pool", "POST", "/api/v1/tokens", adminToken, `{"pools":["p","ghost"]}`, 422, "pools[1]", "", "does not exist"},
		{"bad list filter", "GET", "/api/v1/operations?state=done", adminToken, ``, 400, "state", "", "unknown state"},
		{"bad limit", "GET", "/api/v1/operations?limit=0", adminToken, ``, 400, "limit", "", "1 to 1000"},
		{"bad log cursor", "GET", "/api/v1/operations/" + l.Operation.ID + "/logs?after=-1", adminToken, ``, 400, "after", "", "pos"},
		{"unknown route", "GET", "/api/v1/nothing", adminToken, ``, 404, "", "", "no route"},
		{"lease wait too long", "POST", "/api/v1/worker/lease", "", `{"wait_seconds":60}`, 422, "wait_seconds", "", "0..30"},
		{"log stream", "POST", opPath + "/logs", "", `{"lease_id":"` + l.LeaseID + `","lines":[{"seq":1,"stream":"out","text":"x"}]}`, 422, "lines[0].stream", "", "stdout"},
		{"log line too long", "POST", opPath + "/logs", "", `{"lease_id":"` + l.LeaseID + `","lines":[{"seq":1,"stream":"stdout","text":"` + strings.Repeat("y", 65<<10) + `"}]}`,
			422, "lines[0].text", api.CodeTooLarge, "64 KiB"},
		{"log batch too many lines", "POST", opPath + "/logs", "", `{"lease_id":"` + l.LeaseID + `","lines":[` + strings.TrimSuffix(strings.Repeat(`{"seq":1,"stream":"stdout","text":""},`, 5001), ",") + `]}`,
			422, "lines", api.CodeTooLarge, "5000"},
		{"log time", "POST", opPath + "/logs", "", `{"lease_id":"` + l.LeaseID + `","lines":[{"seq":1,"time":"noon","stream":"stdout"}]}`, 400, "lines[0].time", "", "RFC 3339"},
		{"succeeded with exit code 1", "POST", opPath + "/result", "", `{"lease_id":"` + l.LeaseID + `","state":"succeeded","exit_code":1}`, 422, "exit_code", "", "exit code 0"},
		{"succeeded without exit code", "POST", opPath + "/result", "", `{"lease_id":"` + l.LeaseID + `","state":"succeeded"}`, 422, "exit_code", "", "required"},
		{"result state lost", "POST", opPath + "/result", "", `{"lease_id":"` + l.LeaseID + `","state":"lost"}`, 422, "state", "", "succeeded, failed"},
		{"result missing lines", "POST", opPath + "/result", "", `{"lease_id":"` + l.LeaseID + `","state":"succeeded","exit_code":0,"last_seq":5}`, 409, "last_seq", api.CodeMissingLines, "re-send"},
		{"status state", "POST", opPath + "/status", "", `{"lease_id":"` + l.LeaseID + `","state":"succeeded"}`, 422, "state", "", "result"},
		{"heartbeat running ids", "POST", "/api/v1/worker/heartbeat", "", `{"version":"1","capacity":1,"running":[""],"health":{"ok":true},"draining":false}`, 422, "running[0]", "", "operation id"},

		// Hostile clients (issue 10): what encoding/json or the store would change or mangle silently.
		{"exit code above 255", "POST", opPath + "/result", "", `{"lease_id":"` + l.LeaseID + `","state":"failed","exit_code":256}`, 422, "exit_code", "", "0..255"},
		{"negative exit code", "POST", opPath + "/result", "", `{"lease_id":"` + l.LeaseID + `","state":"failed","exit_code":-1}`, 422, "exit_code", "", "0..255"},
		{"key repeated", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"true","script":"rm -rf /tmp/x"}`, 400, "script", "", "twice"},
		{"key repeated in another case", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"true","SCRIPT":"rm -rf /tmp/x"}`, 400, "SCRIPT", "", "differ only in case"},
		{"key repeated in a step", "POST", "/api/v1/deployments", adminToken, `{"name":"d","pool":"p","steps":[{"script":"x","Pool":"p","pool":"q"}]}`, 400, "steps[0].pool", "", "differ only in case"},
		{"invalid UTF-8 in a sensitive value", "POST", "/api/v1/operations", adminToken,
			"{\"pool\":\"p\",\"script\":\"x\",\"variables\":[{\"name\":\"PASSWORD\",\"value\":\"hunt\xffer2\",\"sensitive\":true}]}", 400, "variables[0].value", "", "UTF-8"},
		{"lone surrogate in a log line", "POST", opPath + "/logs", "", `{"lease_id":"` + l.LeaseID + `","lines":[{"seq":1,"stream":"stdout","text":"a\ud800b"}]}`, 400, "lines[0].text", "", "lone surrogate"},
		{"invalid UTF-8 in a log line", "POST", opPath + "/logs", "", "{\"lease_id\":\"" + l.LeaseID + "\",\"lines\":[{\"seq\":1,\"stream\":\"stdout\",\"text\":\"a\xc3b\"}]}", 400, "lines[0].text", "", "UTF-8"},
		{"NUL in a script", "POST", "/api/v1/operations", adminToken, `{"pool":"p","script":"echo a\u0000rm -rf /"}`, 422, "script", "", "NUL"},
		{"log time beyond 2262", "POST", opPath + "/logs", "", `{"lease_id":"` + l.LeaseID + `","lines":[{"seq":1,"time":"9999-12-31T00:00:00Z","stream":"stdout","text":"x"}]}`, 422, "lines[0].time", "", "out of range"},
		{"log time before 1678", "POST", opPath + "/logs", "", `{"lease_id":"` + l.LeaseID + `","lines":[{"seq":1,"time":"1600-01-01T00:00:00Z","stream":"stdout","text":"x"}]}`, 422, "lines[0].time", "", "out of range"},
		{"escape in a worker name", "POST", "/api/v1/worker/register", regToken.Token, `{"name":"w\u001b[2J","version":"1","capacity":1}`, 422, "name", "", "control character"},
		{"OSC 52 in a worker name", "POST", "/api/v1/worker/register", regToken.Token, `{"name":"w\u001b]52;c;cm0gLXJmIC8=\u0007","version":"1","capacity":1}`, 422, "name", "", "control character"},
		{"C1 control in a worker name", "POST", "/api/v1/worker/register", regToken.Token, `{"name":"w\u009b2J","version":"1","capacity":1}`, 422, "name", "", "control character"},
		{"newline in an operation name", "POST", "/api/v1/operations", adminToken, `{"name":"a\nb","pool":"p","script":"x"}`, 422, "name", "", "control character"},
		{"escape in a deployment name", "POST", "/api/v1/deployments", adminToken, `{"name":"d\u001b[2J","pool":"p","steps":[{"script":"x"}]}`, 422, "name", "", "control character"},
		{"escape in a step name", "POST", "/api/v1/deployments", adminToken, `{"name":"d","pool":"p","steps":[{"script":"x"},{"name":"\u001b]0;title\u0007","script":"y"}]}`, 422, "steps[1].name", "", "control character"},
		{"escape in a pool description", "POST", "/api/v1/pools", adminToken, `{"name":"r","description":"\u001b[31mred"}`, 422, "description", "", "control character"},
	}
	tok := func(t string) string {
		if t == "" {
			return wToken
		}
		return t
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, e := b.raw(tt.method, tt.path, tok(tt.token), []byte(tt.body))
			if status != tt.status || e.Field != tt.field || e.Code != tt.code || !strings.Contains(e.Error, tt.text) {
				t.Errorf("= %d field %q code %q: %s\nwant %d field %q code %q containing %q", status, e.Field, e.Code, e.Error, tt.status, tt.field, tt.code, tt.text)
			}
		})
	}
	// Nothing refused was stored, and the leased operation is untouched.
	if ws, err := b.admin.Workers(b.ctx); err != nil || len(ws) != 2 {
		t.Errorf("%d workers registered, %v; want only the two registered before", len(ws), err)
	}
	ops, err := b.admin.Operations(b.ctx, client.ListOptions{})
	if err != nil || len(ops) != 1 {
		t.Errorf("%d operations stored, %v; want only the one submitted before", len(ops), err)
	}
	if got := b.op(l.Operation.ID); got.State != api.StateLeased {
		t.Errorf("refused worker calls changed the operation to %s", got.State)
	}
}
