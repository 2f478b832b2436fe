package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchOutput is what a busy script prints: 20,000 lines of 100 bytes.
var benchOutput = strings.Repeat(strings.Repeat("x", 99)+"\n", 20000)

// BenchmarkLogWrite compares the node's CRI log writer (a timestamped record per line) with a baseline
// that copies the same output to a file through a buffer; the ratio is the cost of line records.
func BenchmarkLogWrite(b *testing.B) {
	b.Run("baseline-buffered-copy", func(b *testing.B) {
		b.SetBytes(int64(len(benchOutput)))
		for i := 0; i < b.N; i++ {
			f, err := os.Create(filepath.Join(b.TempDir(), "out"))
			if err != nil {
				b.Fatal(err)
			}
			w := bufio.NewWriter(f)
			if _, err := io.Copy(w, strings.NewReader(benchOutput)); err != nil {
				b.Fatal(err)
			}
			w.Flush()
			f.Close()
		}
	})
	b.Run("cri-log", func(b *testing.B) {
		b.SetBytes(int64(len(benchOutput)))
		for i := 0; i < b.N; i++ {
			l, err := newContainerLog(filepath.Join(b.TempDir(), "c.log"))
			if err != nil {
				b.Fatal(err)
			}
			l.addStreams(1)
			l.copyStream("stdout", strings.NewReader(benchOutput))
		}
	})
}

// BenchmarkLogRead measures serving a finished log with timestamps (what the worker's follower asks for).
func BenchmarkLogRead(b *testing.B) {
	l, err := newContainerLog(filepath.Join(b.TempDir(), "c.log"))
	if err != nil {
		b.Fatal(err)
	}
	l.addStreams(1)
	l.copyStream("stdout", strings.NewReader(benchOutput))
	b.SetBytes(int64(len(benchOutput)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var out bytes.Buffer
		if err := l.read(context.Background(), &out, logOptions{timestamps: true, follow: true}); err != nil {
			b.Fatal(err)
		}
	}
}
