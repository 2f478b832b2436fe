// Package logline is the wire format between the in-pod runner and the worker: every output line leaves the
// pod as "seq|time|stream|payload", the payload sealed with AES-GCM under a per-operation key, and the last
// line is an end-of-stream marker carrying the script's exit code.
//
// The additional data of every seal binds the operation id, the sequence number and the stream, so a line
// cannot be replayed into another operation, renumbered or moved between stdout and stderr without the worker
// noticing. Payloads are base64 (standard, unpadded) of nonce || ciphertext || tag.
package logline

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
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

// Sealer seals and opens the payloads of one operation.
type Sealer struct {
	aead        cipher.AEAD
	operationID string
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
	return &Sealer{aead: aead, operationID: operationID}, nil
}

func (s *Sealer) additionalData(seq int64, stream string) []byte {
	return []byte(s.operationID + "|" + strconv.FormatInt(seq, 10) + "|" + stream)
}

// Append appends the encoded record for l, without a trailing newline, to dst.
func (s *Sealer) Append(dst []byte, l Line) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return dst, fmt.Errorf("reading nonce: %w", err)
	}
	sealed := s.aead.Seal(nonce, nonce, l.Payload, s.additionalData(l.Seq, l.Stream))
	dst = strconv.AppendInt(dst, l.Seq, 10)
	dst = append(dst, '|')
	dst = l.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
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
	var l Line
	parts := strings.SplitN(string(rec), "|", 4)
	if len(parts) != 4 {
		return l, ErrNotRecord
	}
	seq, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || seq < 0 {
		return l, ErrNotRecord
	}
	t, err := time.Parse(time.RFC3339Nano, parts[1])
	if err != nil {
		return l, ErrNotRecord
	}
	stream := parts[2]
	if stream != Stdout && stream != Stderr && stream != EOS {
		return l, ErrNotRecord
	}
	sealed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(parts[3], "\r"))
	if err != nil || len(sealed) < s.aead.NonceSize()+s.aead.Overhead() {
		return l, ErrNotRecord
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], s.additionalData(seq, stream))
	if err != nil {
		return l, fmt.Errorf("opening record %d (%s): wrong key, operation or a tampered line: %w", seq, stream, err)
	}
	return Line{Seq: seq, Time: t, Stream: stream, Payload: plain}, nil
}

// ExitCode decodes the exit code carried by an end-of-stream marker.
func (l Line) ExitCode() (int, error) {
	if l.Stream != EOS {
		return 0, fmt.Errorf("line %d is a %s line, not an end-of-stream marker", l.Seq, l.Stream)
	}
	code, err := strconv.Atoi(string(l.Payload))
	if err != nil {
		return 0, fmt.Errorf("decoding exit code of end-of-stream marker %q: %w", l.Payload, err)
	}
	return code, nil
}
