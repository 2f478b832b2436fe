package chartgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Patterns behind the `format` tag. The schema uses them; Validate re-checks the same formats with better
// messages (and checks what a pattern cannot, such as quantities parsing and URLs being absolute).
var formatPatterns = map[string]string{
	"duration":         `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`,
	"quantity":         `^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$`,
	"uri":              `^https?://[^\s/$.?#][^\s]*$`,
	"image-repository": `^([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$`,
	"image-tag":        `^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64})$`,
	"dns-label":        `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`,
	"dns-subdomain":    `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`,
}

var formatMaxLength = map[string]int{"dns-label": 63, "dns-subdomain": 253, "image-tag": 128}

// SchemaID is the $id of the generated schema.
const SchemaID = "https://octo-worker.dev/charts/octo-worker/values.schema.json"

// Schema returns the values JSON schema (draft-07), generated from Values and Defaults.
func Schema() map[string]any {
	s := structSchema(reflect.TypeOf(Values{}), reflect.ValueOf(Defaults()))
	out := map[string]any{
		"$schema": "http://json-schema.org/draft-07/schema#",
		"$id":     SchemaID,
		"title":   "octo-worker chart values",
	}
	for k, v := range s {
		out[k] = v
	}
	return out
}

// SchemaJSON returns Schema as indented JSON with a trailing newline: the chart's values.schema.json.
func SchemaJSON() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(Schema()); err != nil {
		panic(fmt.Sprintf("encoding the values schema: %v", err)) // only maps, strings and numbers: cannot fail
	}
	return buf.Bytes()
}

func structSchema(t reflect.Type, v reflect.Value) map[string]any {
	props := map[string]any{}
	var required []string
	for _, f := range children("", t, v) {
		props[f.Name] = fieldSchema(f)
		if f.Tag.Get("required") == "true" {
			required = append(required, f.Name)
		}
	}
	s := map[string]any{"type": "object", "additionalProperties": false, "properties": props}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

func fieldSchema(f field) map[string]any {
	s := typeSchema(f.Type, f.Tag, f.Value, true)
	if doc := f.Tag.Get("doc"); doc != "" {
		s["description"] = doc
	}
	if f.Value.IsValid() && !isStruct(f.Type) {
		if d := defaultJSON(f); d != nil {
			s["default"] = d
		}
	}
	return s
}

// typeSchema describes one Go type. top is false for list items, which may not be empty strings.
func typeSchema(t reflect.Type, tag reflect.StructTag, v reflect.Value, top bool) map[string]any {
	switch kind := tag.Get("kind"); kind {
	case "object":
		return map[string]any{"type": []any{"object", "null"}}
	case "objects":
		return map[string]any{"type": "array", "items": map[string]any{"type": "object"}}
	}
	if t == durationType {
		return map[string]any{"type": "string", "pattern": formatPatterns["duration"]}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeSchema(t.Elem(), tag, reflect.Value{}, top)
	case reflect.Struct:
		return structSchema(t, v)
	case reflect.String:
		return stringSchema(tag, top)
	case reflect.Int, reflect.Int32, reflect.Int64:
		s := map[string]any{"type": "integer"}
		if m, err := strconv.Atoi(tag.Get("min")); err == nil {
			s["minimum"] = m
		}
		if m, err := strconv.Atoi(tag.Get("max")); err == nil {
			s["maximum"] = m
		}
		return s
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": typeSchema(t.Elem(), "", reflect.Value{}, false)}
	case reflect.Slice:
		s := map[string]any{"type": "array", "items": typeSchema(t.Elem(), itemTag(tag), reflect.Value{}, false)}
		if n, err := strconv.Atoi(tag.Get("minItems")); err == nil {
			s["minItems"] = n
		}
		return s
	}
	panic(fmt.Sprintf("chartgen: no schema for Go type %s", t))
}

// itemTag keeps the tags that describe a list's items (format, pattern, enum) and drops the list's own.
func itemTag(tag reflect.StructTag) reflect.StructTag {
	var parts []string
	for _, k := range []string{"format", "pattern", "hint", "enum"} {
		if v, ok := tag.Lookup(k); ok {
			parts = append(parts, fmt.Sprintf("%s:%q", k, v))
		}
	}
	return reflect.StructTag(strings.Join(parts, " "))
}

func stringSchema(tag reflect.StructTag, top bool) map[string]any {
	s := map[string]any{"type": "string"}
	required := tag.Get("required") == "true"
	if enum := tag.Get("enum"); enum != "" {
		var vals []any
		for _, e := range strings.Split(enum, ",") {
			vals = append(vals, e)
		}
		s["enum"] = vals
		return s
	}
	pattern := tag.Get("pattern")
	if f := tag.Get("format"); f != "" {
		p, ok := formatPatterns[f]
		if !ok {
			panic("chartgen: unknown format " + f)
		}
		pattern = p
		if n, ok := formatMaxLength[f]; ok {
			s["maxLength"] = n
		}
	}
	if h := tag.Get("hint"); h != "" {
		s["x-hint"] = h
	}
	if pattern != "" {
		if top && !required {
			pattern = "^$|" + pattern // empty means "not set" for optional values
		}
		s["pattern"] = pattern
	}
	if required {
		s["minLength"] = 1
	}
	return s
}

// defaultJSON is a field's default as a JSON value, or nil when it is null.
func defaultJSON(f field) any {
	b, err := json.Marshal(f.Value.Interface())
	if err != nil {
		panic(fmt.Sprintf("chartgen: encoding the default of %s: %v", f.Path, err))
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("chartgen: decoding the default of %s: %v", f.Path, err))
	}
	if out == nil && f.Tag.Get("kind") == "object" {
		return map[string]any{}
	}
	return out
}
