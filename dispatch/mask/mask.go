// Package mask hides sensitive variable values in text the dispatch server stores or shows: every occurrence
// of a value, and of each line of a multi-line value, becomes Placeholder.
package mask

import (
	"sort"
	"strings"
)

// Placeholder replaces a sensitive value.
const Placeholder = "********"

// Masker replaces a fixed set of sensitive values. The zero value and a nil *Masker mask nothing.
type Masker struct {
	r *strings.Replacer
}

// New returns a Masker for values. Empty values are ignored; a multi-line value is masked line by line too,
// because log text arrives one line at a time. Longer values are matched first, so a value that contains
// another is hidden whole.
func New(values []string) *Masker {
	seen := make(map[string]bool)
	var parts []string
	add := func(v string) {
		if strings.TrimSpace(v) == "" || seen[v] {
			return
		}
		seen[v] = true
		parts = append(parts, v)
	}
	for _, v := range values {
		add(v)
		if strings.ContainsAny(v, "\r\n") {
			for _, line := range strings.FieldsFunc(v, func(r rune) bool { return r == '\n' || r == '\r' }) {
				add(line)
			}
		}
	}
	if len(parts) == 0 {
		return &Masker{}
	}
	// strings.Replacer tries the old strings in argument order at each position: longest first.
	sort.Slice(parts, func(i, j int) bool {
		if len(parts[i]) != len(parts[j]) {
			return len(parts[i]) > len(parts[j])
		}
		return parts[i] < parts[j]
	})
	pairs := make([]string, 0, 2*len(parts))
	for _, p := range parts {
		pairs = append(pairs, p, Placeholder)
	}
	return &Masker{r: strings.NewReplacer(pairs...)}
}

// Mask returns s with every sensitive value replaced by Placeholder.
func (m *Masker) Mask(s string) string {
	if m == nil || m.r == nil {
		return s
	}
	return m.r.Replace(s)
}

// Empty reports whether the masker has nothing to hide.
func (m *Masker) Empty() bool { return m == nil || m.r == nil }
