// Package decode reads a JSON request body strictly into one of the protocol's types: unknown fields, wrong
// types, a body that is not one JSON object, trailing data, a key given twice (in any case) and strings that
// are not valid UTF-8 are errors that name the field at fault as a JSON path ("steps[2].timeout_seconds"). The server decodes every request with it, and the CLI decodes
// process files with it (after YAML → JSON), so both report the same paths.
package decode

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Error is a decoding error: Field is the JSON path at fault ("" for the body as a whole).
type Error struct {
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Reader decodes one JSON object from r into v (a pointer to a struct). See Bytes.
func Reader(r io.Reader, v any) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	return Bytes(data, v)
}

// Bytes decodes data, which must hold exactly one JSON object, into v (a pointer to a struct). Errors are
// *Error.
func Bytes(data []byte, v any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return &Error{Message: "the body is empty: send a JSON object"}
	}
	if trimmed[0] != '{' {
		return &Error{Message: "the body must be a JSON object ({...})"}
	}
	if e := strictCheck(data); e != nil {
		return e
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return explain(data, v, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &Error{Message: "unexpected data after the JSON object: send one object per request"}
	}
	return nil
}

// explain turns a decoder error into an *Error naming the field.
func explain(data []byte, v any, err error) error {
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return &Error{Message: fmt.Sprintf("malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Message: "malformed JSON: the body ends in the middle of a value"}
	}
	// Unknown fields and wrong types: find the first offender by walking the generic form beside the type,
	// which knows full paths (the decoder's messages name no path for unknown fields).
	var generic any
	gd := json.NewDecoder(bytes.NewReader(data))
	gd.UseNumber()
	if gerr := gd.Decode(&generic); gerr == nil {
		if e := walk(generic, reflect.TypeOf(v), ""); e != nil {
			return e
		}
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return &Error{Field: typeErr.Field, Message: fmt.Sprintf("wrong type: got a JSON %s, want %s", typeErr.Value, kindName(typeErr.Type))}
	}
	return &Error{Message: strings.TrimPrefix(err.Error(), "json: ")}
}

var (
	timeType  = reflect.TypeOf(time.Time{})
	bytesType = reflect.TypeOf([]byte(nil))
)

// walk checks the generic JSON value g against type t the way encoding/json would decode it and returns the
// first mismatch (in sorted key order, so the answer is stable).
func walk(g any, t reflect.Type, path string) *Error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if g == nil {
		return nil // null leaves any Go value as it is
	}
	mismatch := func() *Error {
		return &Error{Field: path, Message: fmt.Sprintf("wrong type: got %s, want %s", jsonKind(g), kindName(t))}
	}
	switch {
	case t == timeType:
		s, ok := g.(string)
		if !ok {
			return mismatch()
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return &Error{Field: path, Message: fmt.Sprintf("%q is not an RFC 3339 time (2006-01-02T15:04:05Z)", s)}
		}
		return nil
	case t == bytesType:
		s, ok := g.(string)
		if !ok {
			return mismatch()
		}
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			return &Error{Field: path, Message: "not valid base64 (standard encoding, with padding)"}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := g.(map[string]any)
		if !ok {
			return mismatch()
		}
		fields := Fields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			name := k
			f, ok := fields[k]
			if !ok {
				name, f, ok = foldLookup(fields, k)
			}
			if !ok {
				return &Error{Field: join(path, k), Message: "unknown field" + suggest(fields, k)}
			}
			if e := walk(m[k], f.Type, join(path, name)); e != nil {
				return e
			}
		}
		return nil
	case reflect.Slice, reflect.Array:
		a, ok := g.([]any)
		if !ok {
			return mismatch()
		}
		for i, el := range a {
			if e := walk(el, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); e != nil {
				return e
			}
		}
		return nil
	case reflect.Map:
		m, ok := g.(map[string]any)
		if !ok {
			return mismatch()
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if e := walk(m[k], t.Elem(), fmt.Sprintf("%s[%q]", path, k)); e != nil {
				return e
			}
		}
		return nil
	case reflect.String:
		if _, ok := g.(string); !ok {
			return mismatch()
		}
	case reflect.Bool:
		if _, ok := g.(bool); !ok {
			return mismatch()
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := g.(json.Number)
		if !ok {
			return mismatch()
		}
		i, err := strconv.ParseInt(string(n), 10, t.Bits())
		if err != nil {
			return &Error{Field: path, Message: fmt.Sprintf("%s is not a whole number in range (%d bits)", n, t.Bits())}
		}
		_ = i
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := g.(json.Number)
		if !ok {
			return mismatch()
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			return &Error{Field: path, Message: fmt.Sprintf("%s is not a non-negative whole number in range (%d bits)", n, t.Bits())}
		}
	case reflect.Float32, reflect.Float64:
		n, ok := g.(json.Number)
		if !ok {
			return mismatch()
		}
		f, err := n.Float64()
		if err != nil || math.IsInf(f, 0) {
			return &Error{Field: path, Message: fmt.Sprintf("%s is not a number in range", n)}
		}
	}
	return nil
}

// Fields maps the JSON names of a struct type's fields to the fields, as encoding/json sees them: embedded
// structs flattened, fields tagged "-" and unexported ones left out. The decoder accepts exactly these names
// (and their case-insensitive matches); the server's OpenAPI document lists them.
func Fields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range Fields(ft) {
					if _, taken := out[k]; !taken {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

// foldLookup matches a key case-insensitively, as encoding/json does.
func foldLookup(fields map[string]reflect.StructField, key string) (string, reflect.StructField, bool) {
	for name, f := range fields {
		if strings.EqualFold(name, key) {
			return name, f, true
		}
	}
	return "", reflect.StructField{}, false
}

// suggest names the known fields, so a typo is easy to fix.
func suggest(fields map[string]reflect.StructField, key string) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	return fmt.Sprintf(" %q: known fields are %s", key, strings.Join(names, ", "))
}

// join appends key to a JSON path: .key for plain names, ["key"] for anything else (an empty key, spaces).
func join(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + fmt.Sprintf("[%q]", key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func jsonKind(g any) string {
	switch g.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "null"
}

func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return "an RFC 3339 time string"
	case t == bytesType:
		return "a base64 string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}
