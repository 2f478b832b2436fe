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
	// few holds the values when there are 2 to prefilterMax of them. Mask then looks for each first and
	// returns a line that holds none as it is: a strings.Replacer of several values copies every line (of
	// one value, it does not), and nearly every line of a log holds no secret.
	few []string
}

// prefilterMax is the most values Mask looks for one by one before it runs the Replacer; with more, one
// pass of the Replacer costs less than that many searches (BenchmarkMask).
const prefilterMax = 8

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
	m := &Masker{r: strings.NewReplacer(pairs...)}
	if len(parts) > 1 && len(parts) <= prefilterMax {
		m.few = parts
	}
	return m
}

// Mask returns s with every sensitive value replaced by Placeholder.
func (m *Masker) Mask(s string) string {
	if m == nil || m.r == nil {
		return s
	}
	if m.few != nil && !m.holdsAny(s) {
		return s
	}
	return m.r.Replace(s)
}

// holdsAny reports whether s holds one of the few values.
func (m *Masker) holdsAny(s string) bool {
	for _, v := range m.few {
		if strings.Contains(s, v) {
			return true
		}
	}
	return false
}

// Empty reports whether the masker has nothing to hide.
func (m *Masker) Empty() bool { return m == nil || m.r == nil }
