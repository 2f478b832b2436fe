package podrunner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(mainEnv); dir != "" {
		// The runner's process, started by TestRunnerPrintsOnlySealedRecords.
		os.Exit(Main(context.Background(), filepath.Join(dir, SpecKey), filepath.Join(dir, SealingKeyKey), filepath.Join(dir, "work"), os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// mainEnv names the directory holding the spec and key of the runner process the test binary becomes.
const mainEnv = "OCTO_TEST_RUNNER_DIR"

// The runner as a process, its stdout and stderr in one pipe as in the pod's log: every line it prints is a
// sealed record and the last is the marker with the script's exit code, which is also the process's. Nothing
// unsealed (such as "script exited with code 3") can land among the records, where the worker would show it as
// a line of the pod's own.
func TestRunnerPrintsOnlySealedRecords(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		script string
		code   int
	}{
		{"success", "echo out; echo err >&2", 0},
		{"failure", "echo out; echo err >&2; exit 3", 3},
		{"killed by a signal", "echo out; kill -TERM $$", 128 + 15},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			key, err := logline.NewKey()
			if err != nil {
				t.Fatal(err)
			}
			spec, _ := json.Marshal(Spec{OperationID: "op-main", Syntax: "sh", Script: c.script})
			if err := os.WriteFile(filepath.Join(dir, SpecKey), spec, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, SealingKeyKey), key, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), mainEnv+"="+dir)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out // one pipe, like the container's log
			err = cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != c.code {
				t.Fatalf("the runner exited with %d (%v), want the script's %d; output:\n%s", code, err, c.code, out.String())
			}
			s, _ := logline.NewSealer(key, "op-main")
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			for i, raw := range lines {
				l, err := s.Parse([]byte(raw))
				if err != nil {
					t.Fatalf("output line %d is not a sealed record (%v): %q", i+1, err, raw)
				}
				if last := i == len(lines)-1; last != (l.Stream == logline.EOS) {
					t.Fatalf("output line %d is %s: the marker must come last, once", i+1, l.Stream)
				}
				if l.Stream == logline.EOS {
					if code, err := l.ExitCode(); err != nil || code != c.code {
						t.Fatalf("the marker says exit code %d (%v), want %d", code, err, c.code)
					}
				}
			}
		})
	}
}

type result struct {
	code   int
	lines  []logline.Line // without the marker
	eos    logline.Line
	raw    string
	stdout []string
	stderr []string
}

func run(t *testing.T, spec Spec, tune func(*Runner)) result {
	t.Helper()
	if spec.OperationID == "" {
		spec.OperationID = "op-test"
	}
	key, err := logline.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r, err := New(spec, key, t.TempDir(), &out)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(r)
	}
	code, err := r.Run(context.Background())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	s, _ := logline.NewSealer(key, spec.OperationID)
	res := result{code: code, raw: out.String()}
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l, err := s.Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("parsing %q: %v", sc.Text(), err)
		}
		if res.eos.Stream != "" {
			t.Fatalf("line after the end-of-stream marker: %q", sc.Text())
		}
		switch l.Stream {
		case logline.EOS:
			res.eos = l
		case logline.Stdout:
			res.stdout = append(res.stdout, string(l.Payload))
			res.lines = append(res.lines, l)
		case logline.Stderr:
			res.stderr = append(res.stderr, string(l.Payload))
			res.lines = append(res.lines, l)
		}
	}
	if res.eos.Stream == "" {
		t.Fatal("no end-of-stream marker")
	}
	for i, l := range res.lines {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d: numbering has a gap", i+1, l.Seq)
		}
	}
	if res.eos.Seq != int64(len(res.lines)) {
		t.Errorf("marker seq = %d, want the line count %d", res.eos.Seq, len(res.lines))
	}
	if c, err := res.eos.ExitCode(); err != nil || c != code {
		t.Errorf("marker exit code = %d, %v; Run returned %d", c, err, code)
	}
	return res
}

func TestRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		spec       Spec
		code       int
		stdout     []string
		stderr     []string
		stderrLike string
	}{
		{name: "success", spec: Spec{Script: "echo one\necho two"}, stdout: []string{"one", "two"}},
		{name: "failure", spec: Spec{Script: "echo bad >&2\nexit 3"}, code: 3, stderr: []string{"bad"}},
		{name: "streams apart", spec: Spec{Script: "echo out\necho err >&2\necho out2"}, stdout: []string{"out", "out2"}, stderr: []string{"err"}},
		{name: "no trailing newline", spec: Spec{Script: "printf 'a\\nb'"}, stdout: []string{"a", "b"}},
		{name: "sh", spec: Spec{Syntax: "sh", Script: "echo $((1+2))"}, stdout: []string{"3"}},
		{name: "python3", spec: Spec{Syntax: "python3", Script: "import sys\nprint('py')\nsys.exit(4)"}, code: 4, stdout: []string{"py"}},
		{name: "variables", spec: Spec{Script: `echo "$GREETING $OCTO_OPERATION_ID"`, OperationID: "op-9", Variables: []api.Variable{{Name: "GREETING", Value: "hi"}}}, stdout: []string{"hi op-9"}},
		{name: "files", spec: Spec{Script: "cat conf/app.txt; test -x run.sh && ./run.sh", Files: []api.File{{Path: "conf/app.txt", Content: []byte("from a file\n")}, {Path: "run.sh", Content: []byte("#!/bin/sh\necho ran\n"), Mode: 0o755}}}, stdout: []string{"from a file", "ran"}},
		{name: "killed by signal", spec: Spec{Script: "kill -9 $$"}, code: 137},
		{name: "unknown syntax", spec: Spec{Syntax: "cobol", Script: "DISPLAY 'HI'"}, code: ExitRunnerError, stderrLike: `syntax "cobol" is not supported`},
		{name: "missing shell", spec: Spec{Syntax: "pwsh", Script: "Write-Host hi"}, code: ExitShellMissing, stderrLike: "this image has no pwsh"},
		{name: "file escapes", spec: Spec{Script: "true", Files: []api.File{{Path: "../x", Content: []byte("x")}}}, code: ExitRunnerError, stderrLike: "files[0].path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.spec.Syntax == "pwsh" {
				if _, err := os.Stat("/usr/bin/pwsh"); err == nil {
					t.Skip("pwsh is installed here")
				}
			}
			res := run(t, tc.spec, nil)
			if res.code != tc.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", res.code, tc.code, res.stderr)
			}
			if diff := cmp.Diff(tc.stdout, res.stdout); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if tc.stderrLike != "" {
				if len(res.stderr) != 1 || !strings.Contains(res.stderr[0], tc.stderrLike) {
					t.Errorf("stderr = %q, want one line containing %q", res.stderr, tc.stderrLike)
				}
			} else if diff := cmp.Diff(tc.stderr, res.stderr); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSensitiveValueNeverInClear(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-very-secret"
	res := run(t, Spec{Script: `echo "password is $PASSWORD"; echo "$PASSWORD" >&2`, Variables: []api.Variable{{Name: "PASSWORD", Value: secret, Sensitive: true}}}, nil)
	if strings.Contains(res.raw, secret) || strings.Contains(res.raw, "password is") {
		t.Fatalf("raw runner output holds plain text: %q", res.raw)
	}
	if diff := cmp.Diff([]string{"password is " + secret}, res.stdout); diff != "" {
		t.Errorf("opened stdout (-want +got):\n%s", diff)
	}
}

func TestLongLinesSplit(t *testing.T) {
	t.Parallel()
	n := 3*logline.MaxPayload + 100
	res := run(t, Spec{Script: "head -c " + itoa(n) + " /dev/zero | tr '\\0' x; echo; echo after"}, nil)
	joined := strings.Join(res.stdout[:len(res.stdout)-1], "")
	if len(joined) != n || strings.Trim(joined, "x") != "" {
		t.Errorf("long line came back as %d bytes in %d records, want %d x's", len(joined), len(res.stdout)-1, n)
	}
	for _, s := range res.stdout {
		if len(s) > logline.MaxPayload {
			t.Errorf("record of %d bytes exceeds MaxPayload", len(s))
		}
	}
	if res.stdout[len(res.stdout)-1] != "after" {
		t.Errorf("last line = %q", res.stdout[len(res.stdout)-1])
	}
}

func TestManyLinesInOrder(t *testing.T) {
	t.Parallel()
	res := run(t, Spec{Script: "seq 1 20000"}, nil)
	if len(res.stdout) != 20000 || res.stdout[0] != "1" || res.stdout[19999] != "20000" {
		t.Fatalf("got %d lines", len(res.stdout))
	}
	for i, s := range res.stdout {
		if s != itoa(i+1) {
			t.Fatalf("line %d = %q", i+1, s)
		}
	}
}

func TestBackgroundProcessDoesNotHoldTheRunner(t *testing.T) {
	t.Parallel()
	start := time.Now()
	res := run(t, Spec{Script: "sleep 30 &\necho started"}, func(r *Runner) { r.OutputGrace = 200 * time.Millisecond })
	if res.code != 0 || len(res.stdout) != 1 {
		t.Fatalf("code %d, stdout %q", res.code, res.stdout)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("runner waited %v for a background process", d)
	}
}

func TestCancelStopsScript(t *testing.T) {
	t.Parallel()
	key, _ := logline.NewKey()
	var out bytes.Buffer
	r, err := New(Spec{OperationID: "op", Script: "echo started; sleep 60"}, key, t.TempDir(), &out)
	if err != nil {
		t.Fatal(err)
	}
	r.OutputGrace = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { code, _ := r.Run(ctx); done <- code }()
	cancel()
	if code := <-done; code != 128+15 {
		t.Errorf("exit code after cancel = %d, want 143 (SIGTERM)", code)
	}
}

func TestCheckFilePath(t *testing.T) {
	t.Parallel()
	for p, ok := range map[string]bool{"a.txt": true, "d/e/f": true, "": false, "/etc/passwd": false, "a/../../b": false, "..": false, ".": false} {
		if err := CheckFilePath(p); (err == nil) != ok {
			t.Errorf("CheckFilePath(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestInstall(t *testing.T) {
	t.Parallel()
	dest := filepath.Join(t.TempDir(), "bin", "octo-worker")
	if err := Install(dest); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dest)
	if err != nil || st.Mode().Perm()&0o111 == 0 || st.Size() == 0 {
		t.Fatalf("installed runner: %v, %v", st, err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// The end-of-stream marker carries what the script used. Here the runner shares its cgroup with the rest of the
// machine, so it measures the largest process (rusage): a script holding a 40 MB string in bash peaks above it.
func TestRunnerMeasuresUsage(t *testing.T) {
	res := run(t, Spec{Syntax: "bash", Script: `s=$(head -c 40000000 /dev/zero | tr '\0' x); i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo ${#s}`}, nil)
	u, err := res.eos.Usage()
	if err != nil || u == nil {
		t.Fatalf("marker %q: usage = %+v, %v", res.eos.Payload, u, err)
	}
	if u.Source != api.UsageRusage || u.PeakMemoryBytes < 40e6 || u.CPUSeconds <= 0 {
		t.Errorf("usage = %+v; want rusage, a peak of at least 40 MB and some CPU", u)
	}
}

// A runner alone in its cgroup (a pod's container) reads the cgroup: memory.peak, and cpu.stat's usage over the
// script's run. One that shares it with any other process falls back to rusage.
func TestMeterReadsItsOwnCgroup(t *testing.T) {
	for _, tt := range []struct {
		name   string
		procs  string
		source string
	}{
		{"alone", fmt.Sprintf("%d\n", os.Getpid()), api.UsageCgroup},
		{"shared", fmt.Sprintf("%d\n1\n", os.Getpid()), api.UsageRusage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "kubepods", "pod1", "ctr")
			write := func(name, content string) {
				t.Helper()
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			self := filepath.Join(root, "self-cgroup")
			if err := os.WriteFile(self, []byte("0::/kubepods/pod1/ctr\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			write("cgroup.procs", tt.procs)
			write("memory.peak", "123456789\n")
			write("cpu.stat", "usage_usec 1000000\nuser_usec 800000\n")
			m := startMeter(cgroupFS{SelfFile: self, Root: root})
			write("cpu.stat", "usage_usec 3500000\nuser_usec 3000000\n")
			u := m.stop()
			if u == nil || u.Source != tt.source {
				t.Fatalf("usage = %+v, want source %s", u, tt.source)
			}
			if tt.source == api.UsageCgroup && (u.PeakMemoryBytes != 123456789 || u.CPUSeconds != 2.5) {
				t.Errorf("usage = %+v, want 123456789 bytes and 2.5 CPU seconds", u)
			}
		})
	}
}
