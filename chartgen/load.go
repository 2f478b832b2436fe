package chartgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Problem is one thing wrong with a set of values: the value's path ("scriptPods.resources.requests.cpu",
// list items as "pools[1]"), what is wrong and what to do, and the source that set it (a file name, "--set",
// or "" when the value comes from the defaults or is missing).
type Problem struct {
	File    string `json:"file,omitempty"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

// String formats a problem as one line: "file: path: message".
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// ProblemsError is returned when values are invalid; it lists every problem found.
type ProblemsError struct {
	Problems []Problem
}

func (e *ProblemsError) Error() string {
	lines := make([]string, 0, len(e.Problems)+1)
	lines = append(lines, fmt.Sprintf("invalid values (%d problem(s)):", len(e.Problems)))
	for _, p := range e.Problems {
		lines = append(lines, "  "+p.String())
	}
	return strings.Join(lines, "\n")
}

// Source is one values document: its name (a file name, shown in problems) and its YAML content.
type Source struct {
	Name string
	Data []byte
}

// SetSource is the name problems give to values that came from --set.
const SetSource = "--set"

// Load reads values the way Helm does: Defaults, then each file in order (maps merge, lists and scalars
// replace, null removes), then each --set expression (Helm's key=value syntax). The result is checked against
// the values schema and decoded; schema problems come back as a *ProblemsError. Load does not run the
// semantic checks: call Validate, or use LoadAndValidate.
func Load(files []string, sets []string) (Values, error) {
	srcs, err := readSources(files)
	if err != nil {
		return Values{}, err
	}
	v, _, err := LoadSources(srcs, sets)
	return v, err
}

// LoadAndValidate is Load followed by Validate; every problem names the file that set the value.
func LoadAndValidate(files []string, sets []string) (Values, error) {
	srcs, err := readSources(files)
	if err != nil {
		return Values{}, err
	}
	return CheckSources(srcs, sets)
}

// CheckSources loads values from in-memory sources and runs the schema and semantic checks, attributing each
// problem to the source that set the value.
func CheckSources(srcs []Source, sets []string) (Values, error) {
	v, origins, err := LoadSources(srcs, sets)
	if err != nil {
		return v, err
	}
	if ps := v.Validate(); len(ps) > 0 {
		for i := range ps {
			ps[i].File = origins.Of(ps[i].Path)
		}
		return v, &ProblemsError{Problems: ps}
	}
	return v, nil
}

func readSources(files []string) ([]Source, error) {
	srcs := make([]Source, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading values file: %w", err)
		}
		srcs = append(srcs, Source{Name: f, Data: data})
	}
	return srcs, nil
}

// Origins records which source last set each value path.
type Origins map[string]string

// Of returns the source that set path or the nearest value containing it, or "" for defaults.
func (o Origins) Of(path string) string {
	for p := path; p != ""; p = parentPath(p) {
		if src, ok := o[p]; ok {
			return src
		}
	}
	return ""
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// LoadSources is Load over in-memory sources. It also returns where each value came from.
func LoadSources(srcs []Source, sets []string) (Values, Origins, error) {
	merged, err := toMap(Defaults())
	if err != nil {
		return Values{}, nil, err
	}
	origins := Origins{}
	var problems []Problem
	for _, src := range srcs {
		doc := map[string]any{}
		if err := yaml.Unmarshal(src.Data, &doc); err != nil {
			problems = append(problems, Problem{File: src.Name, Message: "not a valid YAML map of values: " + yamlError(err)})
			continue
		}
		mergeInto(merged, doc, "", src.Name, origins)
	}
	// Like Helm, all --set expressions parse into one map first, so "rules[0].verbs=..." and
	// "rules[0].resources=..." build one list item.
	setDoc := map[string]any{}
	for _, s := range sets {
		if err := strvals.ParseInto(s, setDoc); err != nil {
			problems = append(problems, Problem{File: SetSource, Message: fmt.Sprintf("cannot parse %q: %v (write key=value, e.g. worker.pools={a,b} or image.tag=1.2.3)", s, err)})
		}
	}
	coerce(setDoc, reflect.TypeOf(Values{}))
	mergeInto(merged, setDoc, "", SetSource, origins)
	if len(problems) > 0 {
		return Values{}, origins, &ProblemsError{Problems: problems}
	}
	if ps := checkSchema(merged); len(ps) > 0 {
		for i := range ps {
			ps[i].File = origins.Of(ps[i].Path)
		}
		return Values{}, origins, &ProblemsError{Problems: ps}
	}
	v, err := decode(merged)
	if err != nil {
		var pe *ProblemsError
		if errors.As(err, &pe) {
			for i := range pe.Problems {
				pe.Problems[i].File = origins.Of(pe.Problems[i].Path)
			}
		}
		return Values{}, origins, err
	}
	return v, origins, nil
}

// yamlError trims the converter's prefix from a YAML error so the line number leads.
func yamlError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "error converting YAML to JSON: ")
	s = strings.TrimPrefix(s, "error unmarshaling JSON: ")
	return s
}

// toMap turns any JSON-encodable value into a generic map.
func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding values: %w", err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decoding values: %w", err)
	}
	return out, nil
}

// decode turns a merged, schema-checked map into Values, refusing unknown fields.
func decode(m map[string]any) (Values, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return Values{}, fmt.Errorf("encoding merged values: %w", err)
	}
	var v Values
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Values{}, &ProblemsError{Problems: []Problem{{Path: te.Field, Message: fmt.Sprintf("must be %s, not %s", te.Type, te.Value)}}}
		}
		return Values{}, &ProblemsError{Problems: []Problem{opaqueProblem(m, err)}}
	}
	return v, nil
}

// opaqueProblem finds which Kubernetes-typed value (affinity, tolerations, security contexts: open in the
// schema) a strict decoding error comes from, so the problem names its path.
func opaqueProblem(m map[string]any, err error) Problem {
	found := Problem{Message: err.Error()}
	walkLeaves("", reflect.TypeOf(Values{}), reflect.Value{}, func(f field) {
		if f.Tag.Get("kind") == "" || found.Path != "" {
			return
		}
		var sub any = m
		for _, k := range strings.Split(f.Path, ".") {
			mm, ok := sub.(map[string]any)
			if !ok {
				return
			}
			sub = mm[k]
		}
		b, _ := json.Marshal(sub)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if e := dec.Decode(reflect.New(f.Type).Interface()); e != nil {
			found = Problem{Path: f.Path, Message: strings.TrimPrefix(e.Error(), "json: ") + " (see the Kubernetes API reference for this object)"}
		}
	})
	return found
}

// mergeInto merges src into dst with Helm's rules: maps merge key by key, anything else replaces, and null
// removes the key. It records the source of every value it sets.
func mergeInto(dst, src map[string]any, prefix, source string, origins Origins) {
	keys := make([]string, 0, len(src))
	for k := range src {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sv := src[k]
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		if sv == nil {
			delete(dst, k)
			origins[path] = source
			continue
		}
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm, path, source, origins)
				continue
			}
			dm := map[string]any{}
			mergeInto(dm, sm, path, source, origins)
			dst[k] = dm
			origins[path] = source
			continue
		}
		dst[k] = sv
		origins[path] = source
	}
}

// coerce turns the numbers and booleans that --set produces into strings where the Values type wants a
// string (image.tag=1.2 or a pool named 42), as a user writing --set means.
func coerce(m map[string]any, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			if n := jsonName(t.Field(i)); n != "" {
				fields[n] = t.Field(i).Type
			}
		}
		for k, v := range m {
			if ft, ok := fields[k]; ok {
				m[k] = coerceValue(v, ft)
			}
		}
	case reflect.Map:
		for k, v := range m {
			m[k] = coerceValue(v, t.Elem())
		}
	}
}

func coerceValue(v any, t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := v.(type) {
	case map[string]any:
		coerce(x, t)
		return x
	case []any:
		if t.Kind() == reflect.Slice {
			for i := range x {
				x[i] = coerceValue(x[i], t.Elem())
			}
		}
		return x
	case int64, int, float64, bool:
		if t.Kind() == reflect.String || t == durationType {
			return fmt.Sprint(x)
		}
	}
	return v
}
