package chartgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"unicode/utf8"

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

// The names problems give to values that came from helm's value flags.
const (
	SetSource        = "--set"
	SetStringSource  = "--set-string"
	SetFileSource    = "--set-file"
	SetJSONSource    = "--set-json"
	SetLiteralSource = "--set-literal"
)

// MaxValuesFileSize is the largest values file (and --set-file file) chartgen reads. Helm keeps a release's
// values in a Secret, and Kubernetes caps a Secret at 1 MiB: values anywhere near that are a mistake.
const MaxValuesFileSize = 256 << 10

// Input is a set of values as a user hands them to helm: values files and helm's value flags. Load applies
// them in helm's order: the files in turn (maps merge, anything else replaces), then --set-json, --set,
// --set-string, --set-file and --set-literal, each parsed by Helm's own strvals into the same map.
type Input struct {
	Files      []Source
	Set        []string // key=value; numbers and booleans stay numbers and booleans, as in helm
	SetString  []string // key=value, the value always a string
	SetFile    []string // key=path, the value the file's content
	SetJSON    []string // key=<JSON>
	SetLiteral []string // key=value taken literally (no commas, braces or escapes)
}

// Loaded is an Input resolved the way helm resolves it.
type Loaded struct {
	// Values are the chart's defaults with the user's values over them (null removes a default), decoded.
	Values Values
	// User holds only the values the user supplied, as helm keeps them for the release (`helm get values`):
	// render and install with these, so the chart's own defaults (values.yaml) fill in the rest and a later
	// chart's new defaults take effect.
	User map[string]any
	// Origins says which file or flag set each value.
	Origins Origins
}

// ReadFiles reads values files into an Input (refusing files over MaxValuesFileSize).
func ReadFiles(files []string) (Input, error) {
	var in Input
	for _, f := range files {
		data, err := readLimited(f)
		if err != nil {
			return Input{}, fmt.Errorf("reading values file: %w", err)
		}
		in.Files = append(in.Files, Source{Name: f, Data: data})
	}
	return in, nil
}

// readLimited reads a file of at most MaxValuesFileSize bytes.
func readLimited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxValuesFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxValuesFileSize {
		size := int64(len(data))
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		return nil, fmt.Errorf("%s is %s: values files may be at most %s (Helm keeps a release's values in a Secret of at most 1 MiB)", name, byteSize(size), byteSize(MaxValuesFileSize))
	}
	return data, nil
}

func byteSize(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", (n+1023)/1024)
}

// Load reads values files and --set expressions the way helm does (see Input) and checks them against the
// values schema; schema problems come back as a *ProblemsError. It does not run the semantic checks: use
// LoadAndValidate for those.
func Load(files []string, sets []string) (Values, error) {
	in, err := ReadFiles(files)
	if err != nil {
		return Values{}, err
	}
	in.Set = sets
	l, err := in.Load()
	return l.Values, err
}

// LoadAndValidate is Load followed by Validate; every problem names the file or flag that set the value.
func LoadAndValidate(files []string, sets []string) (Loaded, error) {
	in, err := ReadFiles(files)
	if err != nil {
		return Loaded{}, err
	}
	in.Set = sets
	return in.Check()
}

// CheckSources loads values from in-memory sources and --set expressions and runs the schema and semantic
// checks.
func CheckSources(srcs []Source, sets []string) (Values, error) {
	l, err := Input{Files: srcs, Set: sets}.Check()
	return l.Values, err
}

// Check is Load followed by Validate, attributing each problem to the file or flag that set the value.
func (in Input) Check() (Loaded, error) {
	l, err := in.Load()
	if err != nil {
		return l, err
	}
	if ps := l.Values.Validate(); len(ps) > 0 {
		for i := range ps {
			ps[i].File = l.Origins.Of(ps[i].Path)
		}
		return l, &ProblemsError{Problems: ps}
	}
	return l, nil
}

// Origins records which source last set each value path.
type Origins map[string]string

// Of returns the source that set path, a value inside it (a map the user wrote into), or the nearest value
// containing it; "" for defaults.
func (o Origins) Of(path string) string {
	if src, ok := o[path]; ok {
		return src
	}
	inside := ""
	for p := range o {
		if (strings.HasPrefix(p, path+".") || strings.HasPrefix(p, path+"[")) && (inside == "" || p < inside) {
			inside = p
		}
	}
	if inside != "" {
		return o[inside]
	}
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

// record notes src as the origin of every value doc sets.
func (o Origins) record(doc map[string]any, prefix, src string) {
	for k, v := range doc {
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			o.record(m, path, src)
			continue
		}
		o[path] = src
	}
}

// valueFlag is one of helm's value flags: its name, its expressions, and the strvals function that parses one.
type valueFlag struct {
	name  string
	exprs []string
	parse func(expr string, dest map[string]any) error
}

// flags lists the value flags in the order helm applies them.
func (in Input) flags() []valueFlag {
	readFile := func(rs []rune) (any, error) {
		data, err := readLimited(string(rs))
		if err != nil {
			return nil, err
		}
		return string(data), nil
	}
	return []valueFlag{
		{SetJSONSource, in.SetJSON, strvals.ParseJSON},
		{SetSource, in.Set, strvals.ParseInto},
		{SetStringSource, in.SetString, strvals.ParseIntoString},
		{SetFileSource, in.SetFile, func(s string, dest map[string]any) error { return strvals.ParseIntoFile(s, dest, readFile) }},
		{SetLiteralSource, in.SetLiteral, strvals.ParseLiteralInto},
	}
}

// Load resolves the input as helm does and checks the result against the values schema.
func (in Input) Load() (Loaded, error) {
	l := Loaded{User: map[string]any{}, Origins: Origins{}}
	var problems []Problem
	for _, src := range in.Files {
		doc, err := parseValuesFile(src.Data)
		if err != nil {
			problems = append(problems, Problem{File: src.Name, Message: err.Error()})
			continue
		}
		l.Origins.record(doc, "", src.Name)
		l.User = mergeMaps(l.User, doc)
	}
	for _, f := range in.flags() {
		for _, expr := range f.exprs {
			// Parsed alone first, to learn which values it sets; then into the user's values, as helm does.
			alone := map[string]any{}
			err := f.parse(expr, alone)
			if err == nil {
				err = f.parse(expr, l.User)
			}
			if err != nil {
				problems = append(problems, Problem{File: f.name, Message: fmt.Sprintf("cannot parse %q: %v (write key=value, e.g. worker.pools={a,b} or image.tag=1.2.3; see helm's --set syntax)", expr, err)})
				continue
			}
			l.Origins.record(alone, "", f.name)
		}
	}
	if len(problems) > 0 {
		return l, &ProblemsError{Problems: problems}
	}
	merged, err := toMap(Defaults())
	if err != nil {
		return l, err
	}
	user, err := deepCopy(l.User)
	if err != nil {
		return l, err
	}
	coalesce(merged, user)
	if ps := checkSchema(merged); len(ps) > 0 {
		for i := range ps {
			ps[i].File = l.Origins.Of(ps[i].Path)
		}
		return l, &ProblemsError{Problems: ps}
	}
	v, err := decode(merged)
	if err != nil {
		var pe *ProblemsError
		if errors.As(err, &pe) {
			for i := range pe.Problems {
				pe.Problems[i].File = l.Origins.Of(pe.Problems[i].Path)
			}
		}
		return l, err
	}
	l.Values = v
	return l, nil
}

// parseValuesFile decodes one values file strictly: valid UTF-8, a YAML map at the top, no key twice (helm
// keeps the last of duplicate keys without a word).
func parseValuesFile(data []byte) (map[string]any, error) {
	if !utf8.Valid(data) {
		line := 1 + bytes.Count(data[:invalidUTF8At(data)], []byte("\n"))
		return nil, fmt.Errorf("line %d is not valid UTF-8: save the file as UTF-8", line)
	}
	doc := map[string]any{}
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		return nil, fmt.Errorf("not a valid YAML map of values: %s", yamlError(err))
	}
	return doc, nil
}

// invalidUTF8At returns the offset of the first byte of data that is not valid UTF-8.
func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// mergeMaps merges b over a as helm merges values files: maps merge key by key, anything else replaces.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// coalesce puts the user's values over the chart's defaults as helm does: maps merge key by key, anything
// else replaces, and null removes the default.
func coalesce(dst, user map[string]any) {
	for k, v := range user {
		switch uv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			if dm, ok := dst[k].(map[string]any); ok {
				coalesce(dm, uv)
				continue
			}
			dm := map[string]any{}
			coalesce(dm, uv)
			dst[k] = dm
		default:
			dst[k] = v
		}
	}
}

func deepCopy(m map[string]any) (map[string]any, error) {
	return toMap(m)
}

// yamlError trims the converter's prefix from a YAML error so the line number leads.
func yamlError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "error converting YAML to JSON: ")
	s = strings.TrimPrefix(s, "error unmarshaling JSON: ")
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.Join(strings.Fields(s), " ")
	if strings.Contains(s, "already set in map") {
		s += " (helm would keep the last one without a word: remove the duplicate)"
	}
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
		b, err := json.Marshal(sub)
		if err != nil {
			return // came from JSON: cannot fail
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if e := dec.Decode(reflect.New(f.Type).Interface()); e != nil {
			found = Problem{Path: f.Path, Message: strings.TrimPrefix(e.Error(), "json: ") + " (see the Kubernetes API reference for this object)"}
		}
	})
	return found
}
