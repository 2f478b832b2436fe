package kubelet

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// runningLog is a container log whose output is still open, with lines one second apart from a fixed
// start; the test writes records with writeLines.
func runningLog(t *testing.T) *containerLog {
	t.Helper()
	l, err := newContainerLog(filepath.Join(t.TempDir(), "c.log"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	n := 0
	l.now = func() time.Time { n++; return start.Add(time.Duration(n-1) * time.Second) }
	l.addStreams(1)
	return l
}

// writeLines appends lines "line-<from>" to "line-<to-1>" as one write, as copyStream does.
func writeLines(l *containerLog, from, to int) {
	var b bytes.Buffer
	for i := from; i < to; i++ {
		l.record(&b, "stdout", "F", []byte(fmt.Sprintf("line-%03d", i)))
	}
	l.write(b.Bytes())
}

func lines(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "line-%03d\n", i)
	}
	return b.String()
}

// contents returns the log's files (name suffix after "c.log" -> content, gunzipped and without
// timestamps); rotated names are replaced by r0, r1, ... in name order, keeping a ".gz".
func contents(t *testing.T, l *containerLog) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(l.path))
	if err != nil {
		t.Fatal(err)
	}
	var rotated []string
	for _, e := range entries {
		if e.Name() != filepath.Base(l.path) {
			rotated = append(rotated, e.Name())
		}
	}
	sort.Strings(rotated)
	names := append([]string{filepath.Base(l.path)}, rotated...)
	out := map[string]string{}
	for i, name := range names {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(l.path), name))
		if err != nil {
			t.Fatal(err)
		}
		key := "current"
		if i > 0 {
			key = fmt.Sprintf("r%d", i-1)
			if strings.HasSuffix(name, ".gz") {
				key += ".gz"
				zr, err := gzip.NewReader(bytes.NewReader(data))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if data, err = io.ReadAll(zr); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
		}
		var text strings.Builder
		for _, rec := range strings.SplitAfter(string(data), "\n") {
			if rec != "" {
				text.WriteString(rec[strings.LastIndexByte(rec[:len(rec)-1], ' ')+1:])
			}
		}
		out[key] = text.String()
	}
	return out
}

// Rotation at a small size keeps at most maxFiles files, gzips all rotated files but the newest, and the
// endpoint reads only the current file (sinceTime, tailLines and limitBytes apply within it).
func TestRotation(t *testing.T) {
	t.Parallel()
	l := runningLog(t)
	p := rotationPolicy{maxSize: 100, maxFiles: 3} // 5 lines are 195 bytes
	for batch := 0; batch < 6; batch++ {
		writeLines(l, batch*5, batch*5+5)
		if err := l.rotate(p); err != nil {
			t.Fatal(err)
		}
	}
	writeLines(l, 30, 33)
	want := map[string]string{"r0.gz": lines(20, 25), "r1": lines(25, 30), "current": lines(30, 33)}
	check := func(when string) {
		t.Helper()
		got := contents(t, l)
		if len(got) != len(want) {
			t.Fatalf("%s: files %v, want %v", when, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s holds %q, want %q", when, k, got[k], v)
			}
		}
	}
	check("after 6 rotations")

	// Below the size, nothing rotates; nor once the container's output has ended.
	if err := l.rotate(rotationPolicy{maxSize: 1000, maxFiles: 3}); err != nil {
		t.Fatal(err)
	}
	check("below the size")

	i64 := func(v int64) *int64 { return &v }
	// Line 31's time: start + 31 s, plus one clock reading for each of the 6 rotations before it.
	line31 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).Add(37 * time.Second)
	cases := []struct {
		name string
		opts logOptions
		want string
	}{
		{"all", logOptions{}, lines(30, 33)},
		{"sinceTime", logOptions{since: line31}, lines(31, 33)},
		{"sinceTime before the current file", logOptions{since: line31.Add(-time.Hour)}, lines(30, 33)},
		{"tailLines more than the current file", logOptions{tailLines: i64(10)}, lines(30, 33)},
		{"limitBytes", logOptions{limitBytes: i64(12)}, "line-030\nlin"},
		{"follow ends with the output", logOptions{follow: true}, lines(30, 33)},
	}
	l.streamEnded()
	if err := l.rotate(p); err != nil {
		t.Fatal(err)
	}
	check("after the output ended")
	for _, tc := range cases {
		var out bytes.Buffer
		if err := l.read(context.Background(), &out, tc.opts); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, out.String(), tc.want)
		}
	}
}

// A follower goes on in the new file after a rotation and sees every line once, in order, including lines
// written to the old file just before it was rotated.
func TestFollowAcrossRotation(t *testing.T) {
	t.Parallel()
	l := runningLog(t)
	p := rotationPolicy{maxSize: 1, maxFiles: 2}
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- l.read(context.Background(), outW, logOptions{follow: true})
		outW.Close()
	}()
	sc := bufio.NewScanner(outR)
	next := 0
	readUntil := func(end int) {
		t.Helper()
		for ; next < end; next++ {
			if !sc.Scan() {
				t.Fatalf("follower ended (%v) before line %d", sc.Err(), next)
			}
			if want := fmt.Sprintf("line-%03d", next); sc.Text() != want {
				t.Fatalf("follower got %q, want %q", sc.Text(), want)
			}
		}
	}
	rotate := func() {
		t.Helper()
		if err := l.rotate(p); err != nil {
			t.Fatal(err)
		}
	}
	writeLines(l, 0, 5)
	readUntil(5)
	writeLines(l, 5, 10) // not yet read when the file is rotated
	rotate()
	writeLines(l, 10, 15)
	readUntil(15)
	writeLines(l, 15, 20)
	rotate()
	writeLines(l, 20, 25)
	l.streamEnded()
	readUntil(25)
	if sc.Scan() {
		t.Fatalf("follower got %q after the last line", sc.Text())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := contents(t, l); got["r0"] != lines(10, 20) || got["current"] != lines(20, 25) || len(got) != 2 {
		t.Errorf("files %v, want r0 with lines 10-19 and the current file with 20-24", got)
	}
}

// Rotation settings are validated as the kubelet validates them; errors name the field.
func TestValidateLogRotation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		size     string
		files    int
		interval time.Duration
		want     string // "" for valid
	}{
		{"defaults", "", 0, 0, ""},
		{"off", "-1", 0, 0, ""},
		{"small", "1Mi", 2, time.Millisecond, ""},
		{"zero size", "0", 0, 0, "ContainerLogMaxSize"},
		{"not a quantity", "ten megs", 0, 0, "ContainerLogMaxSize"},
		{"fractional bytes", "1m", 0, 0, "ContainerLogMaxSize"},
		{"one file", "", 1, 0, "ContainerLogMaxFiles"},
		{"negative files", "", -3, 0, "ContainerLogMaxFiles"},
		{"negative interval", "", 0, -time.Second, "ContainerLogMonitorInterval"},
	}
	for _, tc := range cases {
		err := ValidateLogRotation(tc.size, tc.files, tc.interval)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.want)
		}
	}
}
