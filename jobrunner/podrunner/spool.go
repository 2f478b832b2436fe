package podrunner

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// DefaultSpoolBytes bounds the spool unless the Spec says otherwise (Spec.SpoolBytes).
const DefaultSpoolBytes = 256 << 20

// spoolSegment is the size at which the spool starts a new file: the server's progress frees whole files.
const spoolSegment = 4 << 20

// spool keeps the line records the runner printed (sealed, as printed) in files under dir until the server
// holds them. It is bounded: a record that would take it past limit is not kept (the pod log still has it
// while the kubelet keeps it), and records are kept again once trimming freed room. Writing never blocks on
// the server; a write error stops the spool, never the script.
type spool struct {
	dir     string
	limit   int64
	segSize int64 // spoolSegment; smaller in tests
	window  int64 // readWindow; smaller in tests

	mu      sync.Mutex
	segs    []*segment // oldest first; the last one is being written
	w       *bufio.Writer
	f       *os.File
	size    int64 // bytes in every segment, buffered ones included
	newest  int64 // seq of the newest record kept
	dropped int64 // records not kept: the spool was full
	err     error // a write failed: the spool keeps nothing more
	// read is where the last records call stopped: the next push reads on from there instead of reading and
	// skipping its segment from the start (a push at a time, so each record is read about once).
	read readCursor
}

// readCursor is the byte offset in the segment file path just after the record of seq.
type readCursor struct {
	path string
	seq  int64
	off  int64
}

type segment struct {
	path        string
	first, last int64 // seqs of its first and last record
	written     int64 // bytes written to it, buffered ones included
	flushed     int64 // bytes readable from the file
}

func newSpool(dir string, limit int64) (*spool, error) {
	if limit <= 0 {
		limit = DefaultSpoolBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the spool directory: %w", err)
	}
	return &spool{dir: dir, limit: limit, segSize: spoolSegment, window: readWindow}, nil
}

// add keeps the record of line seq (rec ends with its newline).
func (s *spool) add(seq int64, rec []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if s.size+int64(len(rec)) > s.limit {
		s.dropped++
		return
	}
	seg := s.current()
	if seg == nil || seg.written+int64(len(rec)) > s.segSize {
		if s.err = s.startSegment(seq); s.err != nil {
			return
		}
		seg = s.current()
	}
	if _, s.err = s.w.Write(rec); s.err != nil {
		return
	}
	if seg.first == 0 {
		seg.first = seq
	}
	seg.last, s.newest = seq, seq
	seg.written += int64(len(rec))
	s.size += int64(len(rec))
}

func (s *spool) current() *segment {
	if s.f == nil {
		return nil
	}
	return s.segs[len(s.segs)-1]
}

// startSegment closes the segment being written and starts a new one. s.mu is held.
func (s *spool) startSegment(seq int64) error {
	if err := s.closeCurrent(); err != nil {
		return err
	}
	path := filepath.Join(s.dir, "records-"+strconv.FormatInt(seq, 10))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("creating spool file: %w", err)
	}
	s.f, s.w = f, bufio.NewWriterSize(f, 64<<10)
	s.segs = append(s.segs, &segment{path: path})
	return nil
}

// closeCurrent flushes and closes the segment being written. s.mu is held.
func (s *spool) closeCurrent() error {
	if s.f == nil {
		return nil
	}
	err := s.flushLocked()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f, s.w = nil, nil
	return err
}

// flush makes what was added readable.
func (s *spool) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = s.flushLocked()
	}
}

func (s *spool) flushLocked() error {
	if s.w == nil {
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("writing the spool: %w", err)
	}
	seg := s.segs[len(s.segs)-1]
	seg.flushed = seg.written
	return nil
}

// trim forgets the records up to seq (the server holds them): whole files go.
func (s *spool) trim(seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.segs) > 0 && s.segs[0].last <= seq && s.segs[0].last > 0 {
		seg := s.segs[0]
		if len(s.segs) == 1 && s.f != nil {
			if err := s.closeCurrent(); err != nil && s.err == nil {
				s.err = err
			}
		}
		_ = os.Remove(seg.path)
		s.size -= seg.written
		s.segs = s.segs[1:]
	}
}

// state returns the seq of the newest record kept and how many bytes are kept.
func (s *spool) state() (newest, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newest, s.size
}

// records returns the readable records after seq, in order, at most maxN of them and about maxBytes (one at
// least), without their newlines.
func (s *spool) records(after int64, maxN, maxBytes int) ([]string, error) {
	s.mu.Lock()
	var segs []segment
	for _, seg := range s.segs {
		if seg.last > after && seg.flushed > 0 {
			segs = append(segs, *seg)
		}
	}
	cur := s.read
	s.mu.Unlock()
	var out []string
	size := 0
	defer func() {
		if len(out) > 0 {
			s.mu.Lock()
			s.read = cur
			s.mu.Unlock()
		}
	}()
	for _, seg := range segs {
		var off int64
		if seg.path == cur.path && after >= cur.seq && cur.off <= seg.flushed {
			off = cur.off // the records before it are at or before after
		}
		for window := s.window; off < seg.flushed; {
			// Trimming is the pusher's, which also calls this: the file is there.
			b, err := readRange(seg.path, off, min(seg.flushed, off+window))
			if err != nil {
				return out, fmt.Errorf("reading the spool: %w", err)
			}
			used := 0 // bytes of whole records
			for {
				i := bytes.IndexByte(b[used:], '\n')
				if i < 0 {
					break
				}
				rec := b[used : used+i]
				used += i + 1
				seq := recordSeqBytes(rec)
				if seq <= after {
					continue
				}
				if len(out) == maxN || (len(out) > 0 && size+len(rec) > maxBytes) {
					return out, nil
				}
				out = append(out, string(rec))
				size += len(rec)
				cur = readCursor{path: seg.path, seq: seq, off: off + int64(used)}
			}
			if used == 0 {
				window = seg.flushed - off // a record longer than the window (flushed ends with a record)
				continue
			}
			off += int64(used)
		}
	}
	return out, nil
}

// readWindow is how much of a segment records reads at a time: a push takes what it needs, not the file.
const readWindow = 256 << 10

// readRange reads bytes from..to of the file at path.
func readRange(path string, from, to int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, to-from)
	_, err = f.ReadAt(b, from)
	return b, err
}

// close closes the file being written and removes the spool.
func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.closeCurrent()
	for _, seg := range s.segs {
		_ = os.Remove(seg.path)
	}
	s.segs = nil
}

// recordSeqBytes is recordSeq of a record in bytes, without copying it.
func recordSeqBytes(rec []byte) int64 {
	i := bytes.IndexByte(rec, '|')
	if i < 0 || i > 19 {
		return 0
	}
	var digits [20]byte
	return recordSeq(string(append(digits[:0], rec[:i+1]...)))
}

// recordSeq is the seq a record starts with (0 when it has none).
func recordSeq(rec string) int64 {
	i := strings.IndexByte(rec, '|')
	if i < 0 {
		return 0
	}
	seq, _ := strconv.ParseInt(rec[:i], 10, 64)
	return seq
}
