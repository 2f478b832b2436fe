// Package podrunner is the in-pod script runner (it runs in the script pod, not in the agent): it places the operation's files, runs its script with the
// requested shell, numbers and seals every line of stdout and stderr (keeping them apart) in the logline
// format on its own stdout, and ends with an end-of-stream marker carrying the script's exit code. It runs
// inside any Linux image from a static copy of the octo-worker binary that an init container installs.
package podrunner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/jobrunner/logline"
	"github.com/octo-worker/octo-worker/jobrunner/podrunner/layout"
)

// Spec is what the worker hands the runner through the operation's Secret (as JSON). The sealing key travels
// beside it, in its own Secret key.
type Spec struct {
	OperationID string         `json:"operation_id"`
	Syntax      string         `json:"syntax"`
	Script      string         `json:"script"`
	Files       []api.File     `json:"files,omitempty"`
	Variables   []api.Variable `json:"variables,omitempty"`
	// DispatchURL is the dispatch server the runner calls with the pod token (the Secret's PodTokenKey):
	// empty, or no token, and the pod makes no calls.
	DispatchURL string `json:"dispatch_url,omitempty"`
	// SpoolBytes bounds the records kept until the server holds them (0: DefaultSpoolBytes); DrainSeconds
	// bounds the delivery after the script exited (0: DefaultDrainTimeout). See push.go.
	SpoolBytes   int64 `json:"spool_bytes,omitempty"`
	DrainSeconds int   `json:"drain_seconds,omitempty"`
	// Packages are downloaded (with the pod token) and unpacked into the work directory before the script runs.
	Packages []api.Package `json:"packages,omitempty"`
}

// Exit codes the runner uses for its own failures, in the range shells use for "could not run".
// The script pod's layout: the agent builds the pod with it (jobrunner) and the runner reads it (`octo-worker
// runner run`'s defaults).
const (
	BinDir        = layout.Root + "/bin"       // emptyDir: the init container installs the octo-worker binary here
	OperationDir  = layout.Root + "/operation" // the operation's Secret, mounted read-only
	WorkDir       = layout.Root + "/work"      // emptyDir: the script's working directory and HOME
	SpoolDir      = layout.Root + "/spool"     // emptyDir beside WorkDir, where the runner finds it: records kept for the server
	SpecKey       = "operation.json"           // the Secret's key (and file in OperationDir) holding the Spec
	SealingKeyKey = "sealing-key"              // the Secret's key (and file) holding the per-operation sealing key
	PodTokenKey   = "pod-token"                // the Secret's key (and file) holding the pod token, when the lease had one
)

const (
	ExitRunnerError  = 125 // the runner could not prepare the script (bad spec, files, working directory)
	ExitShellMissing = 127 // the image has no interpreter for the script's syntax
)

// DefaultOutputGrace is how long the runner keeps reading after the script exited, for background processes
// that still hold its stdout or stderr open.
const DefaultOutputGrace = 5 * time.Second

// Shell returns the command line that runs a script file with the given syntax.
func Shell(syntax, scriptPath string) ([]string, error) {
	switch syntax {
	case "", "bash":
		return []string{"bash", "--noprofile", "--norc", scriptPath}, nil
	case "sh":
		return []string{"sh", scriptPath}, nil
	case "python3", "python":
		return []string{"python3", "-u", scriptPath}, nil
	case "pwsh", "powershell":
		return []string{"pwsh", "-NoLogo", "-NoProfile", "-NonInteractive", "-File", scriptPath}, nil
	}
	return nil, fmt.Errorf("syntax %q is not supported: use bash, sh, python3 or pwsh", syntax)
}

// cgroupFS says where the kernel shows the runner's cgroup: the file naming its path in the unified (v2)
// hierarchy, and where that hierarchy is mounted.
type cgroupFS struct{ SelfFile, Root string }

// hostCgroups is where they are in a container (never changed: tests give a Runner their own).
var hostCgroups = cgroupFS{SelfFile: "/proc/self/cgroup", Root: "/sys/fs/cgroup"}

// Runner runs one operation's script.
type Runner struct {
	spec    Spec
	sealer  *logline.Sealer
	workDir string
	// OutputGrace is how long to keep reading output after the script exited (DefaultOutputGrace).
	OutputGrace time.Duration
	// cgroups is where the runner finds its own cgroup to measure the script's usage (hostCgroups).
	cgroups cgroupFS

	push *pusher // the pod's own channel to the server; nil without one
	// PodToken authenticates the runner's calls to the dispatch server (Spec.DispatchURL).
	PodToken string

	mu  sync.Mutex // guards out, seq and buf
	out *bufio.Writer
	seq int64
	buf []byte
	err error // first write error
}

// New returns a Runner that writes sealed records to out.
func New(spec Spec, key []byte, workDir string, out io.Writer) (*Runner, error) {
	s, err := logline.NewSealer(key, spec.OperationID)
	if err != nil {
		return nil, fmt.Errorf("loading sealing key: %w", err)
	}
	return &Runner{spec: spec, sealer: s, workDir: workDir, OutputGrace: DefaultOutputGrace, cgroups: hostCgroups, out: bufio.NewWriterSize(out, 64<<10)}, nil
}

// Run runs the script and writes its output and the end-of-stream marker. It returns the script's exit code
// (ExitRunnerError or ExitShellMissing when it could not run it, reported as a sealed stderr line too). The
// error is non-nil only when the records could not be written.
func (r *Runner) Run(ctx context.Context) (int, error) {
	pushed := make(chan struct{})
	if r.push != nil {
		go func() { defer close(pushed); r.push.run(ctx) }()
	}
	code, usage := r.run(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeLocked(logline.EOS, logline.EndPayload(code, usage))
	eos := string(bytes.TrimSuffix(r.buf, []byte{'\n'}))
	if err := r.out.Flush(); err != nil && r.err == nil {
		r.err = err
	}
	if r.push != nil {
		// The script has exited: deliver what the server lacks, for a bounded time, then exit all the same.
		r.push.spool.flush()
		r.push.finish(eos, r.seq)
		<-pushed
		r.push.spool.close()
	}
	if r.err != nil {
		return code, fmt.Errorf("writing records: %w", r.err)
	}
	return code, nil
}

func (r *Runner) fail(code int, format string, args ...any) int {
	r.line(logline.Stderr, []byte("octo-worker runner: "+fmt.Sprintf(format, args...)), true)
	return code
}

// run runs the script; the usage is nil when the script did not start.
func (r *Runner) run(ctx context.Context) (int, *api.Usage) {
	if err := os.MkdirAll(r.workDir, 0o755); err != nil {
		return r.fail(ExitRunnerError, "creating working directory: %v", err), nil
	}
	if err := r.fetchPackages(ctx); err != nil {
		return r.fail(ExitRunnerError, "%v", err), nil
	}
	if err := WriteFiles(r.workDir, r.spec.Files); err != nil {
		return r.fail(ExitRunnerError, "%v", err), nil
	}
	scriptDir, err := os.MkdirTemp("", "octo-script-")
	if err != nil {
		scriptDir, err = os.MkdirTemp(r.workDir, ".octo-script-")
		if err != nil {
			return r.fail(ExitRunnerError, "creating a directory for the script: %v", err), nil
		}
	}
	defer os.RemoveAll(scriptDir)
	scriptPath := filepath.Join(scriptDir, "script")
	if err := os.WriteFile(scriptPath, []byte(r.spec.Script), 0o700); err != nil {
		return r.fail(ExitRunnerError, "writing the script: %v", err), nil
	}
	argv, err := Shell(r.spec.Syntax, scriptPath)
	if err != nil {
		return r.fail(ExitRunnerError, "%v", err), nil
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return r.fail(ExitShellMissing, "this image has no %s on its PATH (%s): run the step in an image that has it, or change the step's syntax", argv[0], os.Getenv("PATH")), nil
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return r.fail(ExitRunnerError, "creating stdout pipe: %v", err), nil
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return r.fail(ExitRunnerError, "creating stderr pipe: %v", err), nil
	}
	cmd := exec.Command(bin, argv[1:]...)
	cmd.Dir = r.workDir
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.Env = append(os.Environ(), "OCTO_OPERATION_ID="+r.spec.OperationID)
	for _, v := range r.spec.Variables {
		cmd.Env = append(cmd.Env, v.Name+"="+v.Value)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	meter := startMeter(r.cgroups)
	startErr := cmd.Start()
	outW.Close()
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		return r.fail(ExitShellMissing, "starting %s: %v", bin, startErr), nil
	}

	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); r.copyLines(logline.Stdout, outR) }()
	go func() { defer readers.Done(); r.copyLines(logline.Stderr, errR) }()

	// Cancellation (SIGTERM to the runner when the Job is deleted) goes to the script's whole process group.
	exited := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		case <-exited:
		}
	}()
	waitErr := cmd.Wait()
	close(exited)

	readDone := make(chan struct{})
	go func() { readers.Wait(); close(readDone) }()
	select {
	case <-readDone:
	case <-time.After(r.OutputGrace):
		// A background process still holds the pipes: stop reading; what it writes later is lost, as on a VM
		// worker whose script returned.
		outR.Close()
		errR.Close()
		<-readDone
	}
	outR.Close()
	errR.Close()

	usage := meter.stop()
	if waitErr == nil {
		return 0, usage
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), usage
		}
		return ee.ExitCode(), usage
	}
	return r.fail(ExitRunnerError, "waiting for the script: %v", waitErr), nil
}

// copyLines turns one pipe into records, splitting lines longer than logline.MaxPayload.
func (r *Runner) copyLines(stream string, f *os.File) {
	br := bufio.NewReaderSize(f, logline.MaxPayload)
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			text := chunk
			if text[len(text)-1] == '\n' {
				text = text[:len(text)-1]
			}
			r.line(stream, text, br.Buffered() == 0)
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return // io.EOF, or the pipe closed after the grace period
		}
	}
}

// line writes one record; flush pushes it out at once (when the reader has nothing more buffered).
func (r *Runner) line(stream string, text []byte, flush bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.writeLocked(stream, text)
	if r.push != nil {
		r.push.spool.add(r.seq, r.buf)
	}
	if flush {
		if err := r.out.Flush(); err != nil && r.err == nil {
			r.err = err
		}
		if r.push != nil {
			r.push.spool.flush()
		}
	}
}

func (r *Runner) writeLocked(stream string, payload []byte) {
	buf, err := r.sealer.Append(r.buf[:0], logline.Line{Seq: r.seq, Time: time.Now(), Stream: stream, Payload: payload})
	if err == nil {
		buf = append(buf, '\n')
		_, err = r.out.Write(buf)
	}
	r.buf = buf
	if err != nil && r.err == nil {
		r.err = err
	}
}

// WriteFiles places an operation's files under dir. Paths must be relative and stay inside dir.
func WriteFiles(dir string, files []api.File) error {
	for i, f := range files {
		if err := CheckFilePath(f.Path); err != nil {
			return fmt.Errorf("files[%d].path: %w", i, err)
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("files[%d]: creating directory for %s: %w", i, f.Path, err)
		}
		mode := os.FileMode(f.Mode & 0o777)
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, f.Content, mode); err != nil {
			return fmt.Errorf("files[%d]: writing %s: %w", i, f.Path, err)
		}
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("files[%d]: setting mode of %s: %w", i, f.Path, err)
		}
	}
	return nil
}

// CheckFilePath reports whether p is a relative, slash-separated path without "..".
func CheckFilePath(p string) error {
	switch {
	case p == "":
		return errors.New("is empty: give a path relative to the working directory")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q is absolute: give a path relative to the working directory", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%q contains a NUL byte", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("%q leaves the working directory: remove the \"..\"", p)
		}
	}
	if path.Clean(p) == "." {
		return fmt.Errorf("%q names the working directory itself: give a file name", p)
	}
	return nil
}

// Main is the whole of `octo-worker runner run`: it loads the spec and the sealing key, runs the script and
// returns the exit code for the process, the script's. All it writes to stdout is sealed records, the last one
// the end-of-stream marker, which carries that code; it writes nothing to stderr, because the pod's log mixes
// both streams in no promised order, and an unsealed line there would show up as the pod's own. Only a runner
// that cannot seal (no spec or key) or cannot write its records says why on stderr.
func Main(ctx context.Context, specPath, keyPath, workDir string, stdout, stderr io.Writer) int {
	spec, key, err := LoadSpec(specPath, keyPath)
	if err != nil {
		fmt.Fprintf(stderr, "runner: %v\n", err)
		return ExitRunnerError
	}
	r, err := New(spec, key, workDir, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "runner: %v\n", err)
		return ExitRunnerError
	}
	token, _ := os.ReadFile(filepath.Join(filepath.Dir(keyPath), PodTokenKey)) // none: an older server
	r.PodToken = strings.TrimSpace(string(token))
	if len(token) > 0 && spec.DispatchURL != "" {
		if err := r.openChannel(spec, strings.TrimSpace(string(token)), filepath.Join(workDir, "..", "spool")); err != nil {
			r.line(logline.Stderr, []byte("octo-worker runner: this pod cannot deliver the lines the kubelet may lose: "+err.Error()), true)
		}
	}
	code, err := r.Run(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "runner: %v\n", err)
		return ExitRunnerError
	}
	return code
}

// LoadSpec reads the runner's spec and key files.
func LoadSpec(specPath, keyPath string) (Spec, []byte, error) {
	var spec Spec
	b, err := os.ReadFile(specPath)
	if err != nil {
		return spec, nil, fmt.Errorf("reading operation spec: %w", err)
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, nil, fmt.Errorf("decoding operation spec %s: %w", specPath, err)
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return spec, nil, fmt.Errorf("reading sealing key: %w", err)
	}
	return spec, key, nil
}

// Install copies the running executable to dest (mode 0755): the init container uses it to place a static
// runner into the emptyDir that the script container mounts.
func Install(dest string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding own executable: %w", err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("opening own executable: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(dest), err)
	}
	tmp := dest + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying runner to %s: %w", tmp, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("installing runner at %s: %w", dest, err)
	}
	return nil
}
