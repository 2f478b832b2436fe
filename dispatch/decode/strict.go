package decode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// What encoding/json changes without a word, and Bytes refuses before it decodes:
//   - a key given twice in one object, or twice in different case: encoding/json matches keys to fields
//     case-insensitively and keeps the last, so {"script":"true","SCRIPT":"rm -rf /tmp/x"} would run the
//     second script while a reader of the body sees the first;
//   - invalid UTF-8 in a string, and \u escapes of lone surrogates: encoding/json replaces them with U+FFFD,
//     so a sensitive value (or a log line) would be stored changed.
// The check is one pass over the bytes without allocating, except for the keys of the object it is in; it
// leaves malformed JSON to encoding/json, which names the byte at fault.

// maxTrackedKeys bounds the keys compared per object. Every request type has fewer fields than this, so an
// object with more distinct keys holds an unknown field, which the decoder refuses anyway: tracking more
// would only let a body of a million keys cost a million squared comparisons.
const maxTrackedKeys = 64

// segment is one step of a JSON path: an object key or an array index.
type segment struct {
	key   []byte
	index int
	isKey bool
}

type checker struct {
	data []byte
	i    int
	path []segment
	keys [][]byte // keys of the objects being read, innermost last; each object's run starts at its mark
}

// strictCheck returns the first repeated key or invalid string in data, or nil (also for malformed JSON,
// which encoding/json then reports).
func strictCheck(data []byte) *Error {
	c := checker{data: data}
	e, _ := c.value()
	return e
}

// pathString formats the current path as the decoder's errors name fields.
func (c *checker) pathString() string {
	p := ""
	for _, s := range c.path {
		if s.isKey {
			p = join(p, string(s.key))
		} else {
			p = fmt.Sprintf("%s[%d]", p, s.index)
		}
	}
	return p
}

func (c *checker) space() {
	for c.i < len(c.data) {
		switch c.data[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// value checks the value at c.i. ok is false when the JSON is malformed (the check stops there).
func (c *checker) value() (e *Error, ok bool) {
	c.space()
	if c.i >= len(c.data) {
		return nil, false
	}
	switch c.data[c.i] {
	case '{':
		return c.object()
	case '[':
		return c.array()
	case '"':
		_, e, ok := c.string(false)
		return e, ok
	}
	for c.i < len(c.data) { // a number, true, false or null: encoding/json checks its form
		switch c.data[c.i] {
		case ',', ']', '}', ' ', '\t', '\n', '\r':
			return nil, true
		}
		c.i++
	}
	return nil, true
}

func (c *checker) object() (*Error, bool) {
	c.i++ // {
	mark := len(c.keys)
	defer func() { c.keys = c.keys[:mark] }()
	c.space()
	if c.i < len(c.data) && c.data[c.i] == '}' {
		c.i++
		return nil, true
	}
	for {
		c.space()
		if c.i >= len(c.data) || c.data[c.i] != '"' {
			return nil, false
		}
		key, e, ok := c.string(true)
		if e != nil || !ok {
			return e, ok
		}
		if len(c.keys)-mark < maxTrackedKeys {
			for _, k := range c.keys[mark:] {
				if bytes.EqualFold(k, key) {
					msg := fmt.Sprintf("the key %q is given twice in this object", key)
					if !bytes.Equal(k, key) {
						msg = fmt.Sprintf("the keys %q and %q differ only in case, and keys match fields regardless of case", k, key)
					}
					return &Error{Field: join(c.pathString(), string(key)), Message: msg + ": give each field once"}, true
				}
			}
			c.keys = append(c.keys, key)
		}
		c.space()
		if c.i >= len(c.data) || c.data[c.i] != ':' {
			return nil, false
		}
		c.i++
		c.path = append(c.path, segment{key: key, isKey: true})
		e, ok = c.value()
		c.path = c.path[:len(c.path)-1]
		if e != nil || !ok {
			return e, ok
		}
		if end, ok := c.next('}'); !ok || end {
			return nil, ok
		}
	}
}

// next reads what follows a member or an element: ',' (more follow) or close (the object or array ends).
func (c *checker) next(close byte) (end, ok bool) {
	c.space()
	if c.i >= len(c.data) {
		return false, false
	}
	switch c.data[c.i] {
	case ',':
		c.i++
		return false, true
	case close:
		c.i++
		return true, true
	}
	return false, false
}

func (c *checker) array() (*Error, bool) {
	c.i++ // [
	c.space()
	if c.i < len(c.data) && c.data[c.i] == ']' {
		c.i++
		return nil, true
	}
	for n := 0; ; n++ {
		c.path = append(c.path, segment{index: n})
		e, ok := c.value()
		c.path = c.path[:len(c.path)-1]
		if e != nil || !ok {
			return e, ok
		}
		if end, ok := c.next(']'); !ok || end {
			return nil, ok
		}
	}
}

// string checks the string at c.i (its opening quote) and moves past it. As a key (isKey) it returns the
// key as encoding/json reads it; a value's text is not needed, so nothing is allocated for it.
func (c *checker) string(isKey bool) ([]byte, *Error, bool) {
	start := c.i
	c.i++
	escaped := false
	bad := func(what string) *Error {
		field := c.pathString()
		if isKey { // named by what precedes the fault
			field = join(field, string(c.data[start+1:c.i])+"\uFFFD")
			return &Error{Field: field, Message: fmt.Sprintf("a key holds %s: send keys as valid UTF-8", what)}
		}
		return &Error{Field: field, Message: fmt.Sprintf("%s: send text as valid UTF-8 (encoding/json would replace it with U+FFFD, changing the value)", what)}
	}
	for c.i < len(c.data) {
		b := c.data[c.i]
		switch {
		case b == '"':
			c.i++
			if !isKey {
				return nil, nil, true
			}
			if !escaped {
				return c.data[start+1 : c.i-1], nil, true
			}
			var k string
			if json.Unmarshal(c.data[start:c.i], &k) != nil {
				return nil, nil, false
			}
			return []byte(k), nil, true
		case b == '\\':
			escaped = true
			if c.i+1 >= len(c.data) {
				return nil, nil, false
			}
			if c.data[c.i+1] != 'u' {
				c.i += 2
				continue
			}
			r, ok := c.hex4(c.i + 2)
			if !ok {
				return nil, nil, false
			}
			c.i += 6
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return nil, bad(fmt.Sprintf("a lone surrogate \\u%04X at byte %d", r, c.i-6)), true
			case r >= 0xD800 && r <= 0xDBFF:
				low, ok := rune(0), false
				if c.i+1 < len(c.data) && c.data[c.i] == '\\' && c.data[c.i+1] == 'u' {
					low, ok = c.hex4(c.i + 2)
				}
				if !ok || low < 0xDC00 || low > 0xDFFF {
					return nil, bad(fmt.Sprintf("a lone surrogate \\u%04X at byte %d", r, c.i-6)), true
				}
				c.i += 6
			}
		case b < utf8.RuneSelf:
			c.i++
		default:
			r, size := utf8.DecodeRune(c.data[c.i:])
			if r == utf8.RuneError && size == 1 {
				return nil, bad(fmt.Sprintf("invalid UTF-8 (byte 0x%02x at byte %d)", b, c.i)), true
			}
			c.i += size
		}
	}
	return nil, nil, false
}

// hex4 reads the four hex digits of a \u escape at i.
func (c *checker) hex4(i int) (rune, bool) {
	if i+4 > len(c.data) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(c.data[i:i+4]), 16, 32)
	return rune(v), err == nil
}
