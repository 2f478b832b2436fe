package chartgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// formatMessages say what a value of each format looks like; a schema pattern failure uses them.
var formatMessages = map[string]string{
	"duration":         `is not a duration: write a number with a unit, such as "15m", "90s" or "1h30m"`,
	"cpu":              `is not a CPU quantity: write a positive number of cores, e.g. "250m", "0.5" or "2"`,
	"memory":           `is not a memory quantity: write a positive number of bytes with a unit, e.g. "512Mi" or "2Gi" (m means thousandths: "512m" is half a byte)`,
	"label-key":        `is not a valid key: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (e.g. "example.com/tier")`,
	"label-value":      `is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
	"uri":              `is not an absolute http(s) URL: write e.g. "https://deploy.example.com"`,
	"image-repository": `is not an image repository: write e.g. "ghcr.io/org/name" (lowercase path, no tag; put the tag in .tag)`,
	"image-reference":  `is not an image reference with a tag or digest: write e.g. "debian:bookworm" or "ghcr.io/org/tools@sha256:<64 hex>", or set repository and tag separately`,
	"image-tag":        `is not an image tag: letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-'), or a digest "sha256:<64 hex>"`,
	"dns-label":        `is not a valid name: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
	"dns-subdomain":    `is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters`,
}

// checkSchema validates a merged values map against the generated schema and returns one problem per
// failing value.
func checkSchema(values map[string]any) []Problem {
	schema := Schema()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(SchemaJSON()))
	if err != nil {
		panic(fmt.Sprintf("chartgen: the generated schema is not JSON: %v", err))
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, doc); err != nil {
		panic(fmt.Sprintf("chartgen: the generated schema does not load: %v", err))
	}
	sch, err := c.Compile(SchemaID)
	if err != nil {
		panic(fmt.Sprintf("chartgen: the generated schema does not compile: %v", err))
	}
	inst, err := asJSON(values)
	if err != nil {
		return []Problem{{Message: err.Error()}}
	}
	err = sch.Validate(inst)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []Problem{{Message: err.Error()}}
	}
	var out []Problem
	collect(ve, schema, &out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return dedupe(out)
}

// asJSON round-trips v through encoding/json so the validator sees plain JSON values.
func asJSON(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding values for the schema check: %w", err)
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

func collect(e *jsonschema.ValidationError, schema map[string]any, out *[]Problem) {
	path := joinPath(e.InstanceLocation)
	node := schemaAt(schema, e.InstanceLocation)
	// Rules the generator wrote with a message of their own (see schemaRule) report that message, not the
	// failures of their sub-schemas.
	if r, ok := node[ruleKey(e.ErrorKind)].(map[string]any); ok {
		p, _ := r["path"].(string)
		m, _ := r["message"].(string)
		if p != "" {
			path = joinPath(append(append([]string{}, e.InstanceLocation...), strings.Split(p, ".")...))
		}
		*out = append(*out, Problem{Path: path, Message: m})
		return
	}
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			collect(c, schema, out)
		}
		return
	}
	switch k := e.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			msg := unknownMessage(p, node)
			if f, ok := node["x-keys"].(string); ok {
				msg = formatMessages[f]
			}
			*out = append(*out, Problem{Path: joinPath(append(append([]string{}, e.InstanceLocation...), p)), Message: msg})
		}
	case *kind.Type:
		*out = append(*out, Problem{Path: path, Message: typeMessage(k)})
	case *kind.Pattern:
		if k.Got == "" && node["minLength"] != nil {
			return // reported as "must be set" by minLength
		}
		msg := fmt.Sprintf("%q does not match %s", k.Got, k.Want)
		if h, ok := node["x-hint"].(string); ok {
			msg = fmt.Sprintf("%q %s", k.Got, h)
		}
		for f, p := range formatPatterns {
			if strings.HasSuffix(k.Want, p) {
				msg = fmt.Sprintf("%q %s", k.Got, formatMessages[f])
			}
		}
		*out = append(*out, Problem{Path: path, Message: msg})
	case *kind.Enum:
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("%v is not allowed: use one of %s", jsonText(k.Got), enumList(k.Want))})
	case *kind.MinLength:
		*out = append(*out, Problem{Path: path, Message: "must be set (it has no usable default)" + describe(node)})
	case *kind.MinItems:
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("needs at least %d item(s)", k.Want) + describe(node)})
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, Problem{Path: joinPath(append(append([]string{}, e.InstanceLocation...), m)), Message: "must be set" + describe(propSchema(node, m))})
		}
	case *kind.Minimum:
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("%s is too small: the minimum is %s", k.Got.RatString(), k.Want.RatString())})
	case *kind.ExclusiveMinimum:
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("%s is too small: it must be more than %s", k.Got.RatString(), k.Want.RatString())})
	case *kind.UniqueItems:
		*out = append(*out, Problem{Path: fmt.Sprintf("%s[%d]", path, k.Duplicates[1]), Message: fmt.Sprintf("repeats item %d: remove the duplicate", k.Duplicates[0])})
	case *kind.Maximum:
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("%s is too large: the maximum is %s", k.Got.RatString(), k.Want.RatString())})
	case *kind.MaxLength:
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("is too long: at most %d characters", k.Want)})
	default:
		*out = append(*out, Problem{Path: path, Message: e.ErrorKind.LocalizedString(nil)})
	}
}

// ruleKey is the schema extension that carries the message of a rule of the given kind ("x-not", "x-anyOf",
// "x-const", ...), written by schemaRule.
func ruleKey(k jsonschema.ErrorKind) string {
	switch k.(type) {
	case *kind.Not:
		return "x-not"
	case *kind.AnyOf:
		return "x-anyOf"
	case *kind.Const, *kind.Enum, *kind.Minimum, *kind.Maximum:
		return "x-value"
	}
	return ""
}

func dedupe(ps []Problem) []Problem {
	seen := map[string]bool{}
	out := ps[:0]
	for _, p := range ps {
		if k := p.Path + "\x00" + p.Message; !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out
}

// joinPath writes an instance location as a value path: a.b[2].c.
func joinPath(loc []string) string {
	var b strings.Builder
	for i, p := range loc {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			b.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// schemaAt follows an instance location through the schema's properties and items.
func schemaAt(s map[string]any, loc []string) map[string]any {
	for _, p := range loc {
		if props, ok := s["properties"].(map[string]any); ok {
			if next, ok := props[p].(map[string]any); ok {
				s = next
				continue
			}
		}
		if items, ok := s["items"].(map[string]any); ok {
			s = items
			continue
		}
		if ap, ok := s["additionalProperties"].(map[string]any); ok {
			s = ap
			continue
		}
		if pp, ok := s["patternProperties"].(map[string]any); ok && len(pp) == 1 {
			for _, v := range pp {
				s, _ = v.(map[string]any)
			}
			continue
		}
		return nil
	}
	return s
}

func propSchema(s map[string]any, name string) map[string]any {
	if props, ok := s["properties"].(map[string]any); ok {
		if p, ok := props[name].(map[string]any); ok {
			return p
		}
	}
	return nil
}

func describe(s map[string]any) string {
	if d, ok := s["description"].(string); ok && d != "" {
		return " (" + d + ")"
	}
	return ""
}

func unknownMessage(name string, parent map[string]any) string {
	props, _ := parent["properties"].(map[string]any)
	known := make([]string, 0, len(props))
	for k := range props {
		known = append(known, k)
	}
	sort.Strings(known)
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return fmt.Sprintf("unknown value: did you mean %q? (names are case-sensitive)", k)
		}
	}
	for _, k := range known {
		if editDistance(strings.ToLower(k), strings.ToLower(name)) <= 2 {
			return fmt.Sprintf("unknown value: did you mean %q?", k)
		}
	}
	return fmt.Sprintf("unknown value: check the spelling and nesting (known here: %s)", strings.Join(known, ", "))
}

func typeMessage(k *kind.Type) string {
	want := strings.Join(k.Want, " or ")
	msg := fmt.Sprintf("must be %s, not %s", article(want), article(k.Got))
	if want == "string" && (k.Got == "number" || k.Got == "integer" || k.Got == "boolean") {
		msg += ": quote it in YAML (\"2025\"), or give it with --set-string instead of --set"
	}
	if want == "array" && k.Got == "string" {
		msg += ": write a YAML list (e.g. [a, b]) or, with --set, key={a,b}"
	}
	return msg
}

func article(w string) string {
	switch {
	case w == "":
		return w
	case strings.ContainsAny(w[:1], "aeiou"):
		return "an " + w
	}
	return "a " + w
}

func enumList(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = jsonText(v)
	}
	return strings.Join(parts, ", ")
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// editDistance is the Levenshtein distance between a and b (for "did you mean" hints).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
