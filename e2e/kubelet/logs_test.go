package kubelet

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeLog fills a container log with lines one second apart from a fixed start, as the container's
// streams would.
func writeLog(t *testing.T, stdout string) *containerLog {
	t.Helper()
	l := runningLog(t)
	l.copyStream("stdout", strings.NewReader(stdout))
	return l
}

func TestContainerLogRead(t *testing.T) {
	t.Parallel()
	l := writeLog(t, "one\ntwo\nthree\nno newline")
	i64 := func(v int64) *int64 { return &v }
	cases := []struct {
		name string
		opts logOptions
		want string
	}{
		{"all", logOptions{}, "one\ntwo\nthree\nno newline"},
		{"timestamps", logOptions{timestamps: true}, "2030-01-02T03:04:05Z one\n2030-01-02T03:04:06Z two\n2030-01-02T03:04:07Z three\n2030-01-02T03:04:08Z no newline"},
		{"since", logOptions{since: time.Date(2030, 1, 2, 3, 4, 7, 0, time.UTC)}, "three\nno newline"},
		{"tail 2", logOptions{tailLines: i64(2)}, "three\nno newline"},
		{"tail 0", logOptions{tailLines: i64(0)}, ""},
		{"tail more than there is", logOptions{tailLines: i64(10)}, "one\ntwo\nthree\nno newline"},
		{"limit", logOptions{limitBytes: i64(6)}, "one\ntw"},
		{"tail and limit", logOptions{tailLines: i64(2), limitBytes: i64(3)}, "thr"},
		{"stderr only", logOptions{stream: "stderr"}, ""},
		{"follow a finished log", logOptions{follow: true, tailLines: i64(1)}, "no newline"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			if err := l.read(context.Background(), &out, tc.opts); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("got %q, want %q", out.String(), tc.want)
			}
		})
	}
}

// Long lines are split into partial records like containerd does, and read back whole.
func TestContainerLogLongLine(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 3*maxLogLine+10)
	l := writeLog(t, long+"\nend\n")
	var out bytes.Buffer
	if err := l.read(context.Background(), &out, logOptions{}); err != nil {
		t.Fatal(err)
	}
	if out.String() != long+"\nend\n" {
		t.Errorf("read back %d bytes, want %d", out.Len(), len(long)+5)
	}
}

// A follower receives lines as they are written and returns when the streams end.
func TestContainerLogFollow(t *testing.T) {
	t.Parallel()
	l, err := newContainerLog(filepath.Join(t.TempDir(), "c.log"))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	l.addStreams(1)
	go l.copyStream("stdout", pr)

	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- l.read(context.Background(), outW, logOptions{follow: true})
		outW.Close()
	}()
	buf := make([]byte, 64)
	for _, line := range []string{"first\n", "second\n"} {
		if _, err := pw.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		n, err := io.ReadAtLeast(outR, buf, len(line))
		if err != nil || string(buf[:n]) != line {
			t.Fatalf("follower got %q (%v), want %q", buf[:n], err, line)
		}
	}
	pw.Close()
	rest, _ := io.ReadAll(outR)
	if err := <-done; err != nil || len(rest) != 0 {
		t.Fatalf("follower ended with %v and %q, want a clean end", err, rest)
	}
}

// A follower stops when its request ends, even though the container still runs.
func TestContainerLogFollowCancel(t *testing.T) {
	t.Parallel()
	l, err := newContainerLog(filepath.Join(t.TempDir(), "c.log"))
	if err != nil {
		t.Fatal(err)
	}
	l.addStreams(1) // never ends
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.read(ctx, io.Discard, logOptions{follow: true}) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
