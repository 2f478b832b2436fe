package agent

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// binary is the octo-worker binary under test: $OCTO_BINARY, or built once by TestMain.
var binary string

// buildBinary returns $OCTO_BINARY, or builds the binary into dir (CGO_ENABLED=0, as released).
func buildBinary(dir string) (string, error) {
	if b := os.Getenv("OCTO_BINARY"); b != "" {
		return b, nil
	}
	out := filepath.Join(dir, "octo-worker")
	cmd := exec.Command("go", "build", "-o", out, "github.com/octo-worker/octo-worker/cmd/octo-worker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building octo-worker: %v\n%s", err, b)
	}
	return out, nil
}

// metric reads a counter or gauge from a /metrics endpoint: the sum over its label sets.
func metric(t testing.TB, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sum, found := 0.0, false
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			f, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			sum, found = sum+f, true
		}
	}
	if !found {
		t.Fatalf("metric %s not found at %s", name, url)
	}
	return sum
}

// procStats reads a process's resident set size (bytes) and CPU time used so far.
func procStats(pid int) (rss int64, cpu time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces) start after the last ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	rssPages, _ := strconv.ParseInt(fields[21], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return rssPages * int64(os.Getpagesize()), time.Duration(utime+stime) * time.Second / hz, nil
}

// rssParts reads a process's anonymous (private heap and stacks) and file-backed (mapped binary) resident
// memory in bytes from /proc/PID/status.
func rssParts(pid int) (anon, file int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "RssAnon":
			anon = kb << 10
		case "RssFile":
			file = kb << 10
		}
	}
	return anon, file, nil
}

// peakRSS samples a process's RSS until stop is closed and returns the highest value seen.
func peakRSS(pid int, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	var once sync.Once
	go func() {
		var peak int64
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := procStats(pid); err == nil && rss > peak {
				peak = rss
			}
			select {
			case <-t.C:
			case <-stop:
				once.Do(func() { out <- peak })
				return
			}
		}
	}()
	return out
}
