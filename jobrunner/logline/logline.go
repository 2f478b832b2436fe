// Package logline is the wire format between the in-pod runner and the worker: every output line leaves the
// pod as "seq|time|stream|payload", the payload sealed with AES-GCM under a per-operation key, and the last
// line is an end-of-stream marker carrying the script's exit code.
//
// The additional data of every seal binds the operation id, the sequence number and the stream, so a line
// cannot be replayed into another operation, renumbered or moved between stdout and stderr without the worker
// noticing. Payloads are base64 (standard, unpadded) of nonce || ciphertext || tag.
package logline

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// Streams a line can belong to. EOS is the end-of-stream marker: its sequence number is the number of lines
// the runner wrote before it and its payload is the script's exit code in decimal.
const (
	Stdout = "stdout"
	Stderr = "stderr"
	EOS    = "eos"
)

// KeySize is the size of a sealing key in bytes (AES-256).
const KeySize = 32

// MaxPayload is the largest plaintext one line carries. The runner splits longer output lines into several
// records, so a sealed record stays well under the 16 KiB at which container runtimes split log lines.
const MaxPayload = 8 << 10

// Line is one decoded record.
type Line struct {
	Seq     int64
	Time    time.Time
	Stream  string
	Payload []byte
}

// NewKey returns a fresh random sealing key.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("reading random key: %w", err)
	}
	return k, nil
}

// Sealer seals and opens the payloads of one operation. Append is not safe for concurrent use (it keeps a
// nonce counter, scratch space and the text of the current second); Parse and ParseTo are.
type Sealer struct {
	aead        cipher.AEAD
	operationID string

	// Nonces are a random 96-bit value drawn once per Sealer with a record counter XORed into its last 64
	// bits (the random-field-plus-counter construction of NIST SP 800-38D, 8.2): unique within the Sealer,
	// and a second Sealer of the same key (a retried pod) starts from another random value, so two records
	// share a nonce with the probability random per-record nonces have, without a getrandom call per record.
	nonceBase [12]byte
	sealed    uint64
	scratch   []byte
	times     api.TimeText
}

// NewSealer returns a Sealer for the operation with the given key.
func NewSealer(key []byte, operationID string) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealing key has %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("creating cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating GCM: %w", err)
	}
	if aead.NonceSize() != 12 {
		return nil, fmt.Errorf("GCM nonce of %d bytes, want 12", aead.NonceSize())
	}
	s := &Sealer{aead: aead, operationID: operationID}
	if _, err := rand.Read(s.nonceBase[:]); err != nil {
		return nil, fmt.Errorf("reading nonce base: %w", err)
	}
	return s, nil
}

// nextNonce writes the next record's nonce to dst (12 bytes).
func (s *Sealer) nextNonce(dst []byte) {
	copy(dst, s.nonceBase[:])
	binary.BigEndian.PutUint64(dst[4:], binary.BigEndian.Uint64(s.nonceBase[4:])^s.sealed)
	s.sealed++
}

// appendAdditionalData appends the additional data a record of seq and stream is sealed with.
func (s *Sealer) appendAdditionalData(dst []byte, seq int64, stream string) []byte {
	dst = append(dst, s.operationID...)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, '|')
	return append(dst, stream...)
}

// Append appends the encoded record for l, without a trailing newline, to dst.
func (s *Sealer) Append(dst []byte, l Line) ([]byte, error) {
	// One scratch buffer: nonce, then ciphertext and tag (size bytes in all), then the additional data.
	n := s.aead.NonceSize()
	size := n + len(l.Payload) + s.aead.Overhead()
	if need := size + len(s.operationID) + len(l.Stream) + 24; cap(s.scratch) < need {
		s.scratch = make([]byte, 0, max(need, 2*cap(s.scratch)))
	}
	buf := s.scratch[:n]
	s.nextNonce(buf)
	ad := s.appendAdditionalData(buf[size:size], l.Seq, l.Stream)
	sealed := s.aead.Seal(buf, buf, l.Payload, ad) // appends after the nonce, before ad
	dst = strconv.AppendInt(dst, l.Seq, 10)
	dst = append(dst, '|')
	dst = s.times.Append(dst, l.Time.UTC()) // what AppendFormat(dst, time.RFC3339Nano) writes
	dst = append(dst, '|')
	dst = append(dst, l.Stream...)
	dst = append(dst, '|')
	return base64.RawStdEncoding.AppendEncode(dst, sealed), nil
}

// ErrNotRecord is returned by Parse for a line that is not a record at all (for example output of a program
// that ran before the runner, or a runtime's own message); callers report such lines rather than fail.
var ErrNotRecord = errors.New("not a runner record")

// Parse decodes and opens one record (without its trailing newline). A malformed record gives ErrNotRecord;
// a well-formed one that does not open under this key and operation gives another error.
func (s *Sealer) Parse(rec []byte) (Line, error) {
	l, _, err := s.ParseTo(nil, rec)
	return l, err
}

// ParseTo is Parse using buf (grown as needed and returned) for its work: the line's Payload lies in it, valid
// until buf is used again. A reader that keeps one buffer opens records without allocating.
func (s *Sealer) ParseTo(buf, rec []byte) (Line, []byte, error) {
	var l Line
	seqField, rest, ok1 := bytes.Cut(rec, []byte{'|'})
	timeField, rest, ok2 := bytes.Cut(rest, []byte{'|'})
	streamField, payload, ok3 := bytes.Cut(rest, []byte{'|'})
	if !ok1 || !ok2 || !ok3 {
		return l, buf, ErrNotRecord
	}
	seq, ok := parseSeq(seqField)
	if !ok || seq < 0 {
		return l, buf, ErrNotRecord
	}
	t, err := ParseTime(timeField)
	if err != nil {
		return l, buf, ErrNotRecord
	}
	var stream string
	switch string(streamField) {
	case Stdout:
		stream = Stdout
	case Stderr:
		stream = Stderr
	case EOS:
		stream = EOS
	default:
		return l, buf, ErrNotRecord
	}
	buf, err = base64.RawStdEncoding.AppendDecode(buf[:0], bytes.TrimRight(payload, "\r"))
	n := s.aead.NonceSize()
	if err != nil || len(buf) < n+s.aead.Overhead() {
		return l, buf, ErrNotRecord
	}
	size := len(buf)
	buf = s.appendAdditionalData(buf, seq, stream)
	sealed, ad := buf[:size], buf[size:]
	plain, err := s.aead.Open(sealed[n:n], sealed[:n], sealed[n:], ad) // in place
	if err != nil {
		return l, buf, fmt.Errorf("opening record %d (%s): wrong key, operation or a tampered line: %w", seq, stream, err)
	}
	return Line{Seq: seq, Time: t, Stream: stream, Payload: plain}, buf, nil
}

// parseSeq parses a sequence number as strconv.ParseInt(b, 10, 64) does, without allocating for plain digits.
func parseSeq(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		v, err := strconv.ParseInt(string(b), 10, 64)
		return v, err == nil
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			v, err := strconv.ParseInt(string(b), 10, 64) // signs, or not a number
			return v, err == nil
		}
		v = 10*v + int64(c-'0')
	}
	return v, true
}

// ParseTime parses an RFC 3339 time as time.Parse(time.RFC3339Nano, string(b)) does. The UTC form the runner
// and the kubelet write ("2006-01-02T15:04:05.999999999Z") is read without allocating; other forms go to
// time.Parse.
func ParseTime(b []byte) (time.Time, error) {
	// 2006-01-02T15:04:05Z or 2006-01-02T15:04:05.1Z to .123456789Z
	if len(b) < 20 || len(b) > 30 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[len(b)-1] != 'Z' {
		return time.Parse(time.RFC3339Nano, string(b))
	}
	num := func(s []byte) (int, bool) {
		v := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = 10*v + int(c-'0')
		}
		return v, true
	}
	year, ok1 := num(b[0:4])
	month, ok2 := num(b[5:7])
	day, ok3 := num(b[8:10])
	hour, ok4 := num(b[11:13])
	minute, ok5 := num(b[14:16])
	sec, ok6 := num(b[17:19])
	nsec, frac := 0, b[19:len(b)-1]
	ok7 := true
	if len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 {
			ok7 = false
		} else {
			nsec, ok7 = num(frac[1:])
			for i := len(frac) - 1; i < 9; i++ {
				nsec *= 10
			}
		}
	}
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(time.Month(month), year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Parse(time.RFC3339Nano, string(b)) // the error, or a form this does not read
	}
	// time.Date(year, month, day, hour, minute, sec, nsec, time.UTC), without its normalising and zone look-up.
	unix := daysSinceEpoch(year, month, day)*86400 + int64(hour*3600+minute*60+sec)
	return time.Unix(unix, int64(nsec)).UTC(), nil
}

// daysIn returns the number of days of month m (1..12) in year (proleptic Gregorian calendar).
func daysIn(m time.Month, year int) int {
	if m == time.February && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		return 29
	}
	return int("\x1f\x1c\x1f\x1e\x1f\x1e\x1f\x1f\x1e\x1f\x1e\x1f"[m-1])
}

// daysSinceEpoch returns the days from 1970-01-01 to a valid date of the proleptic Gregorian calendar with
// year >= 0 (the civil-from-days inverse in Howard Hinnant's "chrono-Compatible Low-Level Date Algorithms").
func daysSinceEpoch(year, month, day int) int64 {
	y := year
	if month <= 2 {
		y--
	}
	era := (y+400)/400 - 1                    // floor(y / 400) for y >= -1
	yoe := y - era*400                        // [0, 399]
	doy := (153*((month+9)%12)+2)/5 + day - 1 // [0, 365], from March 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy    // [0, 146096]
	return int64(era)*146097 + int64(doe) - 719468
}

// EndPayload is the payload of an end-of-stream marker: the exit code, then, when the runner measured it, a
// space and the script's usage as JSON ("0" or `0 {"peak_memory_bytes":…}`).
func EndPayload(code int, usage *api.Usage) []byte {
	b := strconv.AppendInt(nil, int64(code), 10)
	if usage == nil {
		return b
	}
	u, err := json.Marshal(usage)
	if err != nil {
		return b // a Usage always encodes; without one the marker still says the exit code
	}
	return append(append(b, ' '), u...)
}

// ExitCode decodes the exit code carried by an end-of-stream marker.
func (l Line) ExitCode() (int, error) {
	if l.Stream != EOS {
		return 0, fmt.Errorf("line %d is a %s line, not an end-of-stream marker", l.Seq, l.Stream)
	}
	first, _, _ := bytes.Cut(l.Payload, []byte(" "))
	code, err := strconv.Atoi(string(first))
	if err != nil {
		return 0, fmt.Errorf("decoding exit code of end-of-stream marker %q: %w", l.Payload, err)
	}
	if code < 0 || code > api.MaxExitCode {
		// The server refuses such a result: the marker is as unreadable as a garbled one.
		return 0, fmt.Errorf("end-of-stream marker carries exit code %d, outside 0..%d", code, api.MaxExitCode)
	}
	return code, nil
}

// Usage decodes the script's usage carried by an end-of-stream marker: nil when it carries none (an older
// runner, or a script that did not start) or one that is not a plausible measurement.
func (l Line) Usage() (*api.Usage, error) {
	if l.Stream != EOS {
		return nil, fmt.Errorf("line %d is a %s line, not an end-of-stream marker", l.Seq, l.Stream)
	}
	_, rest, ok := bytes.Cut(l.Payload, []byte(" "))
	if !ok {
		return nil, nil
	}
	var u api.Usage
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		return nil, fmt.Errorf("decoding the usage in the end-of-stream marker: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("the usage in the end-of-stream marker %q has more after its JSON object", l.Payload)
	}
	if err := validate.Usage(&u); err != nil {
		return nil, fmt.Errorf("end-of-stream marker: %w", err)
	}
	return &u, nil
}
