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
	"duration": `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`,
	// Quantities are positive: a number part with at least one non-zero digit. Memory has no sub-byte suffixes
	// (n, u, m) or negative exponents.
	"cpu":              `^\+?` + positiveNumber + `([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?$`,
	"memory":           `^\+?` + positiveNumber + `([kMGTPE]|[KMGTPE]i|[eE]\+?[0-9]+)?$`,
	"label-key":        `^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`,
	"label-value":      `^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$`,
	"uri":              `^https?://[^\s/$.?#][^\s]*$`,
	"image-repository": `^([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$`,
	"image-tag":        `^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64})$`,
	"image-reference":  `^([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$`,
	"dns-label":        `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`,
	"dns-subdomain":    `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`,
}

// positiveNumber is a decimal number with a non-zero digit: "1", "0.5", ".25", "10." but not "0" or "0.0".
const positiveNumber = `([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)`

var formatMaxLength = map[string]int{"dns-label": 63, "dns-subdomain": 253, "image-tag": 128, "label-key": 253 + 1 + 63, "label-value": 63}

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
	if rule, ok := structRules[t]; ok {
		rule(s)
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
		s := objectRules(t)
		s["type"] = []any{"object", "null"}
		return s
	case "objects":
		items := objectRules(t.Elem())
		items["type"] = "object"
		return map[string]any{"type": "array", "items": items}
	}
	if t == durationType {
		return map[string]any{"type": "string", "pattern": formatPatterns["duration"]}
	}
	if t == quantityType {
		return quantitySchema(tag)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeSchema(t.Elem(), tag, reflect.Value{}, top)
	case reflect.Struct:
		s := structSchema(t, v)
		if tag.Get("form") == "reference" {
			// Also one image reference string: properties apply to objects only, the pattern to strings only.
			s["type"] = []any{"object", "string"}
			s["pattern"] = formatPatterns["image-reference"]
		}
		return s
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
		values := typeSchema(t.Elem(), mapValueTag(tag), reflect.Value{}, true)
		if k := tag.Get("keys"); k != "" {
			// Not propertyNames: the validator helm uses reports those at a wrong path.
			return map[string]any{"type": "object", "patternProperties": map[string]any{formatPatterns[k]: values},
				"additionalProperties": false, "x-keys": k}
		}
		return map[string]any{"type": "object", "additionalProperties": values}
	case reflect.Slice:
		s := map[string]any{"type": "array", "items": typeSchema(t.Elem(), itemTag(tag), reflect.Value{}, false)}
		if n, err := strconv.Atoi(tag.Get("minItems")); err == nil {
			s["minItems"] = n
		}
		if tag.Get("unique") == "true" {
			s["uniqueItems"] = true
		}
		return s
	}
	panic(fmt.Sprintf("chartgen: no schema for Go type %s", t))
}

// quantitySchema accepts a quantity as a string (its format's pattern) or, as Kubernetes does, as a number:
// any positive number of CPUs, a whole number of bytes of memory.
func quantitySchema(tag reflect.StructTag) map[string]any {
	s := stringSchema(tag, true)
	if tag.Get("format") == "memory" {
		s["type"] = []any{"string", "integer"}
		s["minimum"] = 1
	} else {
		s["type"] = []any{"string", "number"}
		s["exclusiveMinimum"] = 0
	}
	return s
}

// mapValueTag turns a map's `values` tag into the format of its values.
func mapValueTag(tag reflect.StructTag) reflect.StructTag {
	if v := tag.Get("values"); v != "" {
		return reflect.StructTag(fmt.Sprintf("format:%q", v))
	}
	return ""
}

func anyList(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
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
		s["enum"] = anyList(strings.Split(enum, ","))
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
