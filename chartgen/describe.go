package chartgen

import (
	"reflect"
	"strings"
)

// field is one chart value as the Values type describes it: its path, Go type, tags and value.
type field struct {
	Path  string // dotted value path, e.g. "scriptPods.resources.requests.cpu"
	Name  string // the last path element
	Type  reflect.Type
	Tag   reflect.StructTag
	Value reflect.Value // its value in the struct walked (Defaults() for docs and schema, loaded values when validating); may be invalid
}

var (
	durationType = reflect.TypeOf(Duration(0))
	quantityType = reflect.TypeOf(Quantity(""))
)

// isLeaf reports whether a field is documented and rendered as one value rather than recursed into.
func (f field) isLeaf() bool {
	return !isStruct(f.Type) || f.Tag.Get("kind") != ""
}

func isStruct(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != durationType
}

// children lists the fields of a struct type in declaration order, with their values in v when v is valid.
func children(prefix string, t reflect.Type, v reflect.Value) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name := jsonName(sf)
		if name == "" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		f := field{Path: path, Name: name, Type: sf.Type, Tag: sf.Tag}
		if v.IsValid() {
			f.Value = v.Field(i)
		}
		out = append(out, f)
	}
	return out
}

// jsonName is a struct field's value name, or "" when it is not serialised.
func jsonName(sf reflect.StructField) string {
	if !sf.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return sf.Name
	}
	return name
}

// walkLeaves calls fn for every leaf value under t in declaration order (depth first).
func walkLeaves(prefix string, t reflect.Type, v reflect.Value, fn func(field)) {
	for _, f := range children(prefix, t, v) {
		if f.isLeaf() {
			fn(f)
			continue
		}
		walkLeaves(f.Path, f.Type, f.Value, fn)
	}
}

// sensitivePaths lists the value paths tagged sensitive:"true".
func sensitivePaths() []string {
	var out []string
	walkLeaves("", reflect.TypeOf(Values{}), reflect.ValueOf(Defaults()), func(f field) {
		if f.Tag.Get("sensitive") == "true" {
			out = append(out, f.Path)
		}
	})
	return out
}
