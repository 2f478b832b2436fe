package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// TestOpenAPICoversRoutes: the served document has exactly the routes the mux serves.
func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	resp, err := http.Get(b.url + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		OpenAPI string                            `json:"openapi"`
		Paths   map[string]map[string]interface{} `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("document: %v, version %q", err, doc.OpenAPI)
	}
	n := 0
	for path, methods := range doc.Paths {
		n += len(methods)
		for m := range methods {
			found := false
			for _, rt := range b.srv.routes {
				found = found || rt.pattern == path && strings.EqualFold(rt.method, m)
			}
			if !found {
				t.Errorf("the document has %s %s, which the server does not serve", m, path)
			}
		}
	}
	for _, rt := range b.srv.routes {
		if _, ok := doc.Paths[rt.pattern][strings.ToLower(rt.method)]; !ok {
			t.Errorf("the server serves %s %s, which the document lacks", rt.method, rt.pattern)
		}
		// Each documented route answers something other than "no route" (auth or validation may refuse).
		path := strings.NewReplacer("{id}", "x", "{version}", "1.0.0").Replace(rt.pattern)
		status, e := b.raw(rt.method, path, "", nil)
		if status == http.StatusNotFound && strings.Contains(e.Error, "no route") || status == http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d %s", rt.method, path, status, e.Error)
		}
	}
	if n != len(b.srv.routes) {
		t.Errorf("the document has %d operations, the route table %d", n, len(b.srv.routes))
	}
}

// TestResponsesMatchOpenAPI validates real replies, good and bad, against the schemas the document gives for
// their route and status.
func TestResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	wToken, _ := b.register("w", []string{"p"}, "kubernetes-job")
	w := b.client(wToken)
	goneToken, _ := b.register("deregisters-itself", []string{"p"})
	_, removedID := b.register("removed-by-admin", []string{"p"})
	op := b.submit(api.OperationSpec{Pool: "p", Variables: []api.Variable{{Name: "S", Value: "v", Sensitive: true}},
		Requests: &api.Resources{CPU: "100m"}})
	b.submit(api.OperationSpec{Pool: "p"})
	if _, err := b.admin.Deploy(b.ctx, api.DeploymentSpec{Name: "d", Pool: "p", Steps: []api.OperationSpec{{Script: "a"}, {Script: "b"}}}); err != nil {
		t.Fatal(err)
	}
	l := b.lease(w)
	if _, err := w.AppendLogs(b.ctx, op.ID, l.LeaseID, []api.LogLine{line(1, "x")}); err != nil {
		t.Fatal(err)
	}

	docBytes := b.srv.openAPIJSON()
	var docAny any
	if err := json.Unmarshal(docBytes, &docAny); err != nil {
		t.Fatal(err)
	}
	compile := docSchemas(t, docBytes)
	cases := []struct {
		method, path, pattern, token, body string
	}{
		{"GET", "/api/v1/pools", "/api/v1/pools", adminToken, ""},
		{"POST", "/api/v1/pools", "/api/v1/pools", adminToken, `{"name":"q","description":"second"}`},
		{"POST", "/api/v1/pools", "/api/v1/pools", adminToken, `{"name":"q"}`}, // 409
		{"POST", "/api/v1/tokens", "/api/v1/tokens", adminToken, `{"pools":["p"]}`},
		{"GET", "/api/v1/tokens", "/api/v1/tokens", adminToken, ""},
		{"POST", "/api/v1/operations", "/api/v1/operations", adminToken, `{"pool":"p","script":"x","files":[{"path":"a","content":"aGk="}]}`},
		{"POST", "/api/v1/operations", "/api/v1/operations", adminToken, `{"pool":"p"}`}, // 422
		{"GET", "/api/v1/operations", "/api/v1/operations", adminToken, ""},
		{"GET", "/api/v1/operations/" + op.ID, "/api/v1/operations/{id}", adminToken, ""},
		{"GET", "/api/v1/operations/op-none", "/api/v1/operations/{id}", adminToken, ""}, // 404
		{"GET", "/api/v1/deployments", "/api/v1/deployments", adminToken, ""},
		{"GET", "/api/v1/workers", "/api/v1/workers", adminToken, ""},
		{"GET", "/api/v1/version", "/api/v1/version", adminToken, ""},
		{"GET", "/api/v1/workers", "/api/v1/workers", "", ""}, // 401
		{"GET", "/api/v1/worker/leases", "/api/v1/worker/leases", wToken, ""},
		{"POST", "/api/v1/worker/heartbeat", "/api/v1/worker/heartbeat", wToken, `{"version":"1.0.0","capacity":2,"running":["` + op.ID + `"],"health":{"ok":true},"draining":false}`},
		{"POST", "/api/v1/worker/lease", "/api/v1/worker/lease", wToken, `{"wait_seconds":0}`},
		{"POST", "/api/v1/worker/operations/" + op.ID + "/status", "/api/v1/worker/operations/{id}/status", wToken, `{"lease_id":"` + l.LeaseID + `","state":"running"}`},
		{"POST", "/api/v1/worker/operations/" + op.ID + "/logs", "/api/v1/worker/operations/{id}/logs", wToken, `{"lease_id":"` + l.LeaseID + `","lines":[{"seq":3,"time":"2030-01-01T00:00:00Z","stream":"stderr","text":"e"}]}`},
		{"POST", "/api/v1/worker/operations/" + op.ID + "/result", "/api/v1/worker/operations/{id}/result", wToken, `{"lease_id":"` + l.LeaseID + `","state":"succeeded","exit_code":0,"last_seq":3}`}, // 409
		{"POST", "/api/v1/worker/operations/" + op.ID + "/result", "/api/v1/worker/operations/{id}/result", wToken, `{"lease_id":"` + l.LeaseID + `","state":"failed","exit_code":2,"last_seq":1}`},
		{"POST", "/api/v1/worker/operations/" + op.ID + "/result", "/api/v1/worker/operations/{id}/result", wToken, `{"lease_id":"` + l.LeaseID + `","state":"succeeded","exit_code":0}`}, // 410
		{"DELETE", "/api/v1/workers/" + removedID, "/api/v1/workers/{id}", adminToken, ""},
		{"DELETE", "/api/v1/workers/" + removedID, "/api/v1/workers/{id}", adminToken, ""}, // 404
		{"DELETE", "/api/v1/workers/bad%20id", "/api/v1/workers/{id}", adminToken, ""},     // 400
		{"POST", "/api/v1/worker/deregister", "/api/v1/worker/deregister", goneToken, ""},
		{"POST", "/api/v1/worker/deregister", "/api/v1/worker/deregister", goneToken, ""}, // 401
		{"GET", "/healthz", "/healthz", "", ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequestWithContext(b.ctx, tc.method, b.url+tc.path, strings.NewReader(tc.body))
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name := fmt.Sprintf("%s %s -> %d", tc.method, tc.path, resp.StatusCode)
		if resp.StatusCode == http.StatusNoContent {
			continue
		}
		ptr := fmt.Sprintf("#/paths/%s/%s/responses/%d/content/application~1json/schema",
			strings.ReplaceAll(strings.ReplaceAll(tc.pattern, "~", "~0"), "/", "~1"), strings.ToLower(tc.method), resp.StatusCode)
		if !documented(docAny, tc.pattern, strings.ToLower(tc.method), resp.StatusCode) {
			t.Errorf("%s: status %d is not documented for the route", name, resp.StatusCode)
			continue
		}
		sch, err := compile(ptr)
		if err != nil {
			t.Errorf("%s: compiling %s: %v", name, ptr, err)
			continue
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err != nil {
			t.Errorf("%s: reply is not JSON: %q", name, body)
			continue
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("%s: reply does not match the documented schema:\n%s\n%v", name, body, err)
		}
	}
}

// TestOpenAPISchemasRefuseWrongReplies is the control for the test above: the schemas do catch a reply that
// is off (an unknown field, a wrong type, a missing field).
func TestOpenAPISchemasRefuseWrongReplies(t *testing.T) {
	t.Parallel()
	srv, err := New(nil, Config{}, logrusDiscard())
	if err != nil {
		t.Fatal(err)
	}
	sch, err := docSchemas(t, srv.openAPIJSON())("#/components/schemas/AppendLogsResponse")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"last_seq":1,"extra":true}`, `{"last_seq":"1"}`, `{"gap":true}`} {
		inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if sch.Validate(inst) == nil {
			t.Errorf("schema accepted %s", bad)
		}
	}
	inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(`{"last_seq":1,"gap":true}`))
	if err := sch.Validate(inst); err != nil {
		t.Errorf("schema refused a good reply: %v", err)
	}
}

// docSchemas loads an OpenAPI document into a JSON Schema compiler and returns a function that compiles the
// schema at a JSON pointer into the document ("#/components/schemas/Operation").
func docSchemas(t *testing.T, doc []byte) func(ptr string) (*jsonschema.Schema, error) {
	t.Helper()
	d, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	const base = "https://octo-worker.invalid/openapi.json"
	if err := c.AddResource(base, d); err != nil {
		t.Fatal(err)
	}
	return func(ptr string) (*jsonschema.Schema, error) { return c.Compile(base + ptr) }
}

func documented(doc any, pattern, method string, status int) bool {
	paths, _ := doc.(map[string]any)["paths"].(map[string]any)
	route, _ := paths[pattern].(map[string]any)[method].(map[string]any)
	responses, _ := route["responses"].(map[string]any)
	_, ok := responses[strconv.Itoa(status)]
	return ok
}

// TestProtocolDocNamesEveryRoute keeps PROTOCOL.md's route tables in step with the server.
func TestProtocolDocNamesEveryRoute(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(nil, Config{}, logrusDiscard())
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range srv.routes {
		if name := "`" + rt.method + " " + rt.pattern + "`"; !strings.Contains(string(doc), name) {
			t.Errorf("PROTOCOL.md does not mention %s", name)
		}
	}
}
