package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// maxLogLine is the size at which a line is split into partial ("P") records, as containerd does.
const maxLogLine = 16 * 1024

// containerLog is one container run's log file in the CRI format the kubelet reads
// ("<RFC3339Nano time> <stream> <F|P> <content>\n"), plus the signals a follower waits on. path is the
// current file; rotation (rotate.go) renames it and opens a new one.
type containerLog struct {
	path string

	mu           sync.Mutex
	f            *os.File
	changed      chan struct{} // closed and replaced after every append and every rotation
	done         chan struct{} // closed when the container's output streams have ended
	streams      int           // output streams still open
	gen          int           // rotations so far: which file is at path
	lastRotation time.Time     // the time in the last rotated file's name
	now          func() time.Time
}

func newContainerLog(path string) (*containerLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating container log %s: %w", path, err)
	}
	return &containerLog{path: path, f: f, changed: make(chan struct{}), done: make(chan struct{}), now: time.Now}, nil
}

// copyStream appends r (a container's stdout or stderr) to the log line by line until EOF. Call it once per
// stream after adding it with addStreams; the log is done when every stream has ended.
func (l *containerLog) copyStream(stream string, r io.Reader) {
	defer l.streamEnded()
	br := bufio.NewReaderSize(r, maxLogLine)
	var batch bytes.Buffer
	// Records of lines already read are written together when the reader would block next, so a burst of
	// output costs one write instead of one per line.
	flush := func() {
		if batch.Len() > 0 {
			l.write(batch.Bytes())
			batch.Reset()
		}
	}
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			l.record(&batch, stream, "F", line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			l.record(&batch, stream, "P", line)
		default:
			if len(line) > 0 {
				// The stream ended without a newline: a partial record keeps the exact bytes.
				l.record(&batch, stream, "P", line)
			}
			flush()
			return
		}
		if br.Buffered() == 0 || batch.Len() >= 64*1024 {
			flush()
		}
	}
}

func (l *containerLog) addStreams(n int) {
	l.mu.Lock()
	l.streams += n
	l.mu.Unlock()
}

func (l *containerLog) streamEnded() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.streams--
	if l.streams == 0 {
		_ = l.f.Close()
		close(l.done)
	}
}

// record appends one CRI log record to b.
func (l *containerLog) record(b *bytes.Buffer, stream, tag string, content []byte) {
	b.WriteString(l.now().UTC().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.WriteString(stream)
	b.WriteByte(' ')
	b.WriteString(tag)
	b.WriteByte(' ')
	b.Write(content)
	b.WriteByte('\n')
}

// write appends whole records to the file and wakes followers.
func (l *containerLog) write(records []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.f.Write(records)
	close(l.changed)
	l.changed = make(chan struct{})
}

// state returns the channels a follower waits on (changed fires on the next append or rotation, done when
// the log is complete) and the current file's generation.
func (l *containerLog) state() (changed, done <-chan struct{}, gen int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed, l.done, l.gen
}

// open opens the current file for reading and returns its generation.
func (l *containerLog) open() (*os.File, int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return nil, 0, fmt.Errorf("opening container log: %w", err)
	}
	return f, l.gen, nil
}

// tail returns up to max bytes of the log's content (no timestamps), for FallbackToLogsOnError.
func (l *containerLog) tail(maxLines, maxBytes int) string {
	var out bytes.Buffer
	tail := int64(maxLines)
	_ = l.read(context.Background(), &out, logOptions{tailLines: &tail})
	b := out.Bytes()
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	return string(b)
}

// logOptions are the kubelet log endpoint's query parameters.
type logOptions struct {
	follow     bool
	timestamps bool
	since      time.Time // zero: from the start
	tailLines  *int64
	limitBytes *int64
	stream     string // "stdout" or "stderr"; "" for both
}

type logRecord struct {
	ts      []byte
	stream  string
	partial bool
	content []byte
}

func parseRecord(line []byte) (logRecord, error) {
	// <ts> <stream> <tag> <content>
	var fields [3][]byte
	rest := line
	for i := range fields {
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			if i < 2 {
				return logRecord{}, fmt.Errorf("malformed log record %q", line)
			}
			fields[i], rest = rest, nil
			break
		}
		fields[i], rest = rest[:j], rest[j+1:]
	}
	return logRecord{ts: fields[0], stream: string(fields[1]), partial: string(fields[2]) == "P", content: rest}, nil
}

// before tells whether the record was written before t.
func (r logRecord) before(t time.Time) (bool, error) {
	ts, err := time.Parse(time.RFC3339Nano, string(r.ts))
	if err != nil {
		return false, fmt.Errorf("malformed log record time %q: %w", r.ts, err)
	}
	return ts.Before(t), nil
}

// errLimitReached ends a read when limitBytes have been written.
var errLimitReached = errors.New("limitBytes reached")

// read writes the log to w as the kubelet's /containerLogs endpoint does, following it when asked until the
// container's output ends or ctx is done. flush, when not nil, is called after each batch. Like the kubelet,
// it reads only the current file (rotated files are not served); a follower whose file is rotated finishes
// it and goes on in the new current file.
func (l *containerLog) read(ctx context.Context, w io.Writer, o logOptions, flush ...func()) error {
	f, gen, err := l.open()
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	if o.tailLines != nil {
		if err := seekTail(f, *o.tailLines); err != nil {
			return err
		}
	}
	remaining := int64(-1)
	if o.limitBytes != nil {
		remaining = *o.limitBytes
	}
	bw := bufio.NewWriterSize(w, 32*1024)
	defer bw.Flush()
	w = bw
	write := func(b []byte) error {
		if remaining >= 0 {
			if int64(len(b)) >= remaining {
				_, err := w.Write(b[:remaining])
				remaining = 0
				if err != nil {
					return err
				}
				return errLimitReached
			}
			remaining -= int64(len(b))
		}
		_, err := w.Write(b)
		return err
	}
	br := bufio.NewReaderSize(f, 64*1024)
	var pending []byte // an incomplete line at the end of the file (a write in progress)
	var out []byte
	for {
		changed, done, current := l.state()
		for {
			chunk, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				pending = append(pending, chunk...)
				continue
			}
			if len(chunk) > 0 && chunk[len(chunk)-1] != '\n' {
				pending = append(pending, chunk...)
				break
			}
			if len(chunk) > 0 {
				line := chunk[:len(chunk)-1]
				if len(pending) > 0 {
					line = append(pending, line...)
					pending = pending[:0]
				}
				rec, perr := parseRecord(line)
				if perr != nil {
					return perr
				}
				if o.stream != "" && rec.stream != o.stream {
					continue
				}
				if !o.since.IsZero() {
					early, err := rec.before(o.since)
					if err != nil {
						return err
					}
					if early {
						continue
					}
				}
				out = out[:0]
				if o.timestamps {
					out = append(out, rec.ts...)
					out = append(out, ' ')
				}
				out = append(out, rec.content...)
				if !rec.partial {
					out = append(out, '\n')
				}
				if werr := write(out); werr != nil {
					if errors.Is(werr, errLimitReached) {
						return nil
					}
					return werr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("reading container log: %w", err)
			}
		}
		if o.follow && current != gen {
			// The file was rotated before the read above began, so that read reached its end: go on in the
			// new current file, as the kubelet's follow reopens the path when the runtime creates it again.
			// A follower more than one rotation behind misses the files in between, as with the kubelet.
			nf, ngen, err := l.open()
			if err != nil {
				return err
			}
			f.Close()
			f, gen = nf, ngen
			br.Reset(f)
			continue
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		for _, fl := range flush {
			fl()
		}
		if !o.follow {
			return nil
		}
		select {
		case <-done:
			// Read once more: the last appends may have landed after the read above.
			select {
			case <-changed:
				continue
			default:
			}
			if _, err := br.Peek(1); err == nil {
				continue
			}
			return nil
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// seekTail positions f at the start of the last n records.
func seekTail(f *os.File, n int64) error {
	if n < 0 {
		return nil
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("reading container log: %w", err)
	}
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	pos := end
	var count int64
	for pos > 0 && count < n {
		i := bytes.LastIndexByte(data[:pos], '\n')
		count++
		pos = i
		if i < 0 {
			break
		}
	}
	start := 0
	if count == n && pos >= 0 {
		start = pos + 1
	}
	if n == 0 {
		start = len(data)
	}
	_, err = f.Seek(int64(start), io.SeekStart)
	return err
}
