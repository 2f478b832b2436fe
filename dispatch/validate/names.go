package validate

import (
	"fmt"
	"regexp"
	"unicode/utf8"
)

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	capability = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	version    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
	objectID   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// WorkerID checks a worker id given in a request path. The server makes ids as a prefix and hex digits
// (wkr-0123456789abcdef); anything else cannot name a worker and is refused before it reaches the store or
// the log.
func WorkerID(field, id string) error {
	if !objectID.MatchString(id) {
		return fail(field, "not a worker id: a worker id is at most 128 letters, digits, '.', '_' and '-', such as wkr-0123456789abcdef; `octo-worker workers list` shows them")
	}
	return nil
}

// PoolName checks a pool name: a DNS label, because it ends up in Kubernetes labels.
func PoolName(field, name string) error {
	if name == "" {
		return fail(field, "required: name a pool")
	}
	if len(name) > 63 || !dnsLabel.MatchString(name) {
		return fail(field, "%q is not a valid pool name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

func poolList(field string, pools []string, required bool) error {
	if len(pools) == 0 {
		if required {
			return fail(field, "required: name at least one pool")
		}
		return nil
	}
	if len(pools) > MaxListLen {
		return fail(field, "%d pools; at most %d", len(pools), MaxListLen)
	}
	seen := map[string]bool{}
	for i, p := range pools {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := PoolName(f, p); err != nil {
			return err
		}
		if seen[p] {
			return fail(f, "pool %q is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// Capabilities checks a list of capability names.
func Capabilities(field string, caps []string) error {
	if len(caps) > MaxListLen {
		return fail(field, "%d capabilities; at most %d", len(caps), MaxListLen)
	}
	seen := map[string]bool{}
	for i, c := range caps {
		f := fmt.Sprintf("%s[%d]", field, i)
		if len(c) > 63 || !capability.MatchString(c) {
			return fail(f, "%q is not a valid capability: use lower-case letters, digits, '-' and '.' (e.g. kubernetes-job)", c)
		}
		if seen[c] {
			return fail(f, "capability %q is listed twice", c)
		}
		seen[c] = true
	}
	return nil
}

// name checks a free-text name or description that tables and messages print: text, without control
// characters (C0, DEL, C1), which a terminal would act on (ESC starts sequences that clear the screen or
// write the clipboard; a newline or a carriage return forges table rows).
func name(field, s string, max int) error {
	if err := text(field, s, max); err != nil {
		return err
	}
	if i, r, ok := control(s); ok {
		return fail(field, "control character %U at byte %d: names are printed on terminals; use printable text", r, i)
	}
	return nil
}

// control returns the first control character in s (C0, DEL or C1) and its byte offset.
func control(s string) (int, rune, bool) {
	for i, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return i, r, true
		}
	}
	return 0, 0, false
}

func text(field, s string, max int) error {
	if len(s) > max {
		return fail(field, "%d bytes; at most %d", len(s), max)
	}
	if !utf8.ValidString(s) {
		return fail(field, "not valid UTF-8")
	}
	return nil
}
