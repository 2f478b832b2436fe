package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// The CLI prints what the server holds: names, messages, scripts. A terminal acts on control characters in
// them (ESC starts sequences that clear the screen, retitle the window or write the clipboard with OSC 52; a
// carriage return overwrites a row), so every table and message escapes them: esc for one-line fields,
// escText for text whose lines and tabs are its layout (a script). The server refuses control characters in
// names, but not in messages (refusing a result would lose it), and an older or hostile server may send them.
// Log lines are the exception: they print as the script wrote them, colours included, as kubectl logs does.

// escapingWriter escapes what each Write carries (keeping newlines and tabs: a table's rows and columns).
// Every table and message the CLI prints through output goes through it; fields that could hold a newline
// or a tab of their own take esc as well, so that they cannot forge rows.
type escapingWriter struct{ w io.Writer }

func (e escapingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(e.w, escText(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// esc returns s with every control character (C0, DEL, C1) and every invalid byte written as an escape:
// \x1b, \n, \u009b.
func esc(s string) string { return escape(s, false) }

// escText is esc keeping newlines and tabs.
func escText(s string) string { return escape(s, true) }

func escape(s string, layout bool) string {
	clean := func(r rune) bool {
		return r >= 0x20 && r != 0x7f && (r < 0x80 || r > 0x9f) || layout && (r == '\n' || r == '\t')
	}
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !clean(r) || r == utf8.RuneError && size == 1 {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case clean(r):
			b.WriteString(s[i : i+size])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}
