package server

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/decode"
)

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request, _ caller) error {
	writeJSON(w, http.StatusOK, s.OpenAPI())
	return nil
}

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

// OpenAPI returns the API as an OpenAPI 3.1 document, generated from the route table and the api types, so
// it cannot drift from what the server does. In schemas, "required" lists the fields that are always sent;
// which request fields a request must set is the validation's business (errors name the field).
func (s *Server) OpenAPI() map[string]any {
	g := &schemaGen{defs: map[string]any{}}
	paths := map[string]map[string]any{}
	for _, rt := range s.routes {
		op := map[string]any{"summary": rt.summary, "operationId": operationID(rt)}
		switch rt.auth {
		case authPublic:
			op["security"] = []any{}
		case authAdmin:
			op["security"] = []any{map[string]any{"admin": []string{}}}
		case authRegistration:
			op["security"] = []any{map[string]any{"registrationToken": []string{}}}
		case authWorker:
			op["security"] = []any{map[string]any{"workerToken": []string{}}}
		case authWorkerOrAdmin:
			op["security"] = []any{map[string]any{"workerToken": []string{}}, map[string]any{"admin": []string{}}}
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.pattern, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, map[string]any{"name": q, "in": "query", "required": false, "schema": map[string]any{"type": "string"}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		limit := rt.limit
		if limit == 0 {
			limit = defaultBodyLimit
		}
		switch {
		case rt.request != nil:
			op["requestBody"] = map[string]any{"required": true, "description": "at most " + byteSize(limit),
				"content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.request))}}}
		case rt.rawRequest != "":
			op["requestBody"] = map[string]any{"required": true, "description": "at most " + byteSize(limit),
				"content": map[string]any{rt.rawRequest: map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": rt.rawRequest}}}}
		}
		responses := map[string]any{}
		ok := map[string]any{"description": http.StatusText(rt.status)}
		switch {
		case rt.rawResponse != "" && rt.response != nil:
			ok["content"] = map[string]any{rt.rawResponse: map[string]any{"schema": g.schema(reflect.TypeOf(rt.response)),
				"description": "one JSON value per line"}}
		case rt.rawResponse != "":
			ok["content"] = map[string]any{rt.rawResponse: map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": rt.rawResponse}}}
		case rt.response != nil:
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.response))}}
		}
		responses[strconv.Itoa(rt.status)] = ok
		errSchema := map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(api.Error{}))}}
		codes := append([]int{}, rt.also...)
		if rt.request != nil || rt.rawRequest != "" {
			codes = append(codes, 400, 408, 413, 422)
		}
		if rt.auth != authPublic {
			codes = append(codes, 401, 403)
		}
		codes = append(codes, 500)
		for _, c := range codes {
			if c == 204 {
				responses["204"] = map[string]any{"description": "nothing to return"}
				continue
			}
			responses[strconv.Itoa(c)] = map[string]any{"description": http.StatusText(c), "content": errSchema}
		}
		op["responses"] = responses
		if paths[rt.pattern] == nil {
			paths[rt.pattern] = map[string]any{}
		}
		paths[rt.pattern][strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "octo-worker dispatch API", "version": "v1",
			"description": "The dispatch protocol between the dispatch server, its CLI and its workers. PROTOCOL.md explains the flows, states and limits."},
		"paths": paths,
		"components": map[string]any{
			"schemas": g.defs,
			"securitySchemes": map[string]any{
				"admin":             map[string]any{"type": "http", "scheme": "bearer", "description": "the admin token"},
				"registrationToken": map[string]any{"type": "http", "scheme": "bearer", "description": "a pool-scoped registration token"},
				"workerToken":       map[string]any{"type": "http", "scheme": "bearer", "description": "the token a worker got when it registered"},
			},
		},
	}
}

func operationID(rt route) string {
	p := strings.NewReplacer("/api/v1/", "", "/", "_", "{", "", "}", "", ".", "_").Replace(rt.pattern)
	return strings.ToLower(rt.method) + "_" + strings.Trim(p, "_")
}

// schemaGen turns Go types into JSON Schema (2020-12, as OpenAPI 3.1 uses), named structs under
// #/components/schemas.
type schemaGen struct {
	defs map[string]any
}

var (
	timeT  = reflect.TypeOf(time.Time{})
	bytesT = reflect.TypeOf([]byte(nil))
)

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	nullable := false
	for t.Kind() == reflect.Pointer {
		t, nullable = t.Elem(), true
	}
	var s map[string]any
	switch {
	case t == timeT:
		s = map[string]any{"type": "string", "format": "date-time"}
	case t == bytesT:
		s = map[string]any{"type": "string", "contentEncoding": "base64"}
	default:
		switch t.Kind() {
		case reflect.String:
			s = map[string]any{"type": "string"}
		case reflect.Bool:
			s = map[string]any{"type": "boolean"}
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			s = map[string]any{"type": "integer"}
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			s = map[string]any{"type": "integer", "minimum": 0}
		case reflect.Float32, reflect.Float64:
			s = map[string]any{"type": "number"}
		case reflect.Slice, reflect.Array:
			s = map[string]any{"type": []string{"array", "null"}, "items": g.schema(t.Elem())}
		case reflect.Map:
			s = map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
		case reflect.Interface:
			s = map[string]any{}
		case reflect.Struct:
			name := t.Name()
			if _, done := g.defs[name]; !done {
				g.defs[name] = map[string]any{} // placeholder against recursion
				g.defs[name] = g.object(t)
			}
			s = map[string]any{"$ref": "#/components/schemas/" + name}
		}
	}
	if nullable {
		return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
	}
	return s
}

func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	// The fields the decoder accepts, so the document and the decoder cannot disagree.
	for name, f := range decode.Fields(t) {
		props[name] = g.schema(f.Type)
		if _, opts, _ := strings.Cut(f.Tag.Get("json"), ","); !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
			required = append(required, name)
		}
	}
	sort.Strings(required)
	obj := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		obj["required"] = required
	}
	return obj
}

// openAPIJSON renders the document (for tests and docs).
func (s *Server) openAPIJSON() []byte {
	b, _ := json.MarshalIndent(s.OpenAPI(), "", "  ")
	return b
}
