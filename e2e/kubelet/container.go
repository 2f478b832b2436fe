package kubelet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// containerSpec is everything needed to start one container process.
type containerSpec struct {
	argv     []string
	env      []string
	dir      string // working directory inside the container; "" = "/"
	hostname string
	image    Image
	mounts   []bindMount
	scratch  string // host directory for this container's private root (a tmpfs is mounted on it)

	uid, gid     uint32
	groups       []uint32
	readOnlyRoot bool
	noNewPrivs   bool
	dropCaps     []uintptr // capabilities removed from the bounding set
	stdout       *os.File
	stderr       *os.File
}

// bindMount puts a host file or directory at a path inside the container.
type bindMount struct {
	source   string
	target   string
	readOnly bool
}

// process is a running container: its PID-namespace init process on the host.
type process struct {
	pid  int
	done chan struct{} // closed when the process has exited
	// Set before done is closed.
	exitCode int
	err      error
}

func (p *process) signal(sig syscall.Signal) {
	// The process is the init of its own PID namespace: killing it kills everything it started.
	_ = syscall.Kill(p.pid, sig)
}

// startContainer starts a container process in private mount, UTS and PID namespaces.
//
// Go cannot run code between fork and exec, so the namespace is built on a dedicated OS thread: the
// goroutine locks its thread, unshares the mount and UTS namespaces (thread-local once CLONE_FS is
// unshared too), builds the container root (an overlay of the image root with a private tmpfs upper layer,
// a synthesized /dev, /proc and /sys from the host, the volumes at their mount paths), chroots the thread
// and forks the process from it, so the child inherits all of that. The thread then waits for the process
// and is never returned to the Go scheduler: the goroutine exits while still locked, which ends the thread.
// Nothing is mounted in the host's namespace, and all mounts vanish with the process.
//
// The child gets Pdeathsig SIGKILL, which fires when the thread that forked it ends; the thread lives exactly
// as long as the process, or until this program dies, so no container outlives the node's process.
func startContainer(spec containerSpec) (*process, error) {
	started := make(chan error, 1)
	p := &process{done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// The main thread cannot be ended by the runtime (it would only be parked, keeping the mounts alive
		// and changing what /proc/self shows): do the work on a fresh thread while this one is held.
		if unix.Gettid() == unix.Getpid() {
			inner := make(chan struct{})
			go func() {
				defer close(inner)
				runtime.LockOSThread()
				runOnTaintedThread(spec, p, started)
			}()
			<-inner
			runtime.UnlockOSThread()
			return
		}
		runOnTaintedThread(spec, p, started)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// runOnTaintedThread runs on a locked thread that must never be reused: it returns while still locked.
func runOnTaintedThread(spec containerSpec, p *process, started chan<- error) {
	cmd, err := prepareAndStart(spec)
	if err != nil {
		close(p.done)
		started <- err
		return
	}
	p.pid = cmd.Process.Pid
	started <- nil
	err = cmd.Wait()
	p.exitCode, p.err = exitStatus(cmd, err)
	close(p.done)
}

func exitStatus(cmd *exec.Cmd, err error) (int, error) {
	ps := cmd.ProcessState
	if ps == nil {
		return -1, err
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return ps.ExitCode(), err
	}
	return ps.ExitCode(), nil
}

func prepareAndStart(spec containerSpec) (*exec.Cmd, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS | unix.CLONE_NEWUTS); err != nil {
		return nil, fmt.Errorf("creating the container's mount namespace (needs root): %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("making mounts private: %w", err)
	}
	if spec.hostname != "" {
		if err := unix.Sethostname([]byte(spec.hostname)); err != nil {
			return nil, fmt.Errorf("setting hostname: %w", err)
		}
	}
	root, err := buildRoot(spec)
	if err != nil {
		return nil, err
	}
	// Open every bind source before leaving the host's root; they are mounted through /proc/thread-self/fd
	// after chroot so that mount paths resolve (symlinks included) inside the container's root.
	type openMount struct {
		fd int
		bindMount
		dir bool
	}
	var opened []openMount
	defer func() {
		for _, o := range opened {
			_ = unix.Close(o.fd)
		}
	}()
	mounts := append([]bindMount(nil), spec.mounts...)
	for target, source := range spec.image.Files {
		mounts = append(mounts, bindMount{source: source, target: target, readOnly: true})
	}
	for _, m := range mounts {
		st, err := os.Stat(m.source)
		if err != nil {
			return nil, fmt.Errorf("mount source for %s: %w", m.target, err)
		}
		fd, err := unix.Open(m.source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening mount source %s: %w", m.source, err)
		}
		opened = append(opened, openMount{fd: fd, bindMount: m, dir: st.IsDir()})
	}
	devNull, err := os.OpenFile("/dev/null", os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/null: %w", err)
	}
	defer devNull.Close()

	if err := unix.Chroot(root); err != nil {
		return nil, fmt.Errorf("entering the container root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return nil, fmt.Errorf("entering the container root: %w", err)
	}
	for _, o := range opened {
		if !filepath.IsAbs(o.target) {
			return nil, fmt.Errorf("mount path %q must be absolute", o.target)
		}
		if err := makeMountPoint(o.target, o.dir); err != nil {
			return nil, err
		}
		src := fmt.Sprintf("/proc/thread-self/fd/%d", o.fd)
		if err := unix.Mount(src, o.target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return nil, fmt.Errorf("mounting %s at %s: %w", o.source, o.target, err)
		}
		if o.readOnly {
			if err := unix.Mount("", o.target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
				return nil, fmt.Errorf("making %s read-only: %w", o.target, err)
			}
		}
	}
	if spec.readOnlyRoot {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return nil, fmt.Errorf("making the root filesystem read-only: %w", err)
		}
	}
	path, err := lookPath(spec.argv[0], spec.env)
	if err != nil {
		return nil, err
	}
	dir := spec.dir
	if dir == "" {
		dir = "/"
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating working directory %s: %w", dir, err)
		}
	}
	for _, c := range spec.dropCaps {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("dropping capability %d: %w", c, err)
		}
	}
	if spec.noNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("setting no_new_privs: %w", err)
		}
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   spec.argv,
		Env:    spec.env,
		Dir:    dir,
		Stdin:  devNull,
		Stdout: spec.stdout,
		Stderr: spec.stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Pdeathsig:  syscall.SIGKILL,
			Cloneflags: syscall.CLONE_NEWPID,
			Credential: &syscall.Credential{Uid: spec.uid, Gid: spec.gid, Groups: spec.groups, NoSetGroups: false},
		},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.argv[0], err)
	}
	return cmd, nil
}

// buildRoot mounts the container's root filesystem under spec.scratch and returns its path.
func buildRoot(spec containerSpec) (string, error) {
	if err := os.MkdirAll(spec.scratch, 0o700); err != nil {
		return "", fmt.Errorf("creating container directory: %w", err)
	}
	if err := unix.Mount("octo-ctr", spec.scratch, "tmpfs", 0, "mode=0700"); err != nil {
		return "", fmt.Errorf("mounting the container's scratch tmpfs: %w", err)
	}
	upper, work, root := filepath.Join(spec.scratch, "upper"), filepath.Join(spec.scratch, "work"), filepath.Join(spec.scratch, "root")
	for _, d := range []string{upper, work, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", fmt.Errorf("creating container directory: %w", err)
		}
	}
	lower := spec.image.Root
	if lower == "" {
		lower = "/"
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("mounting the container root (overlay of %s): %w", lower, err)
	}
	// Kernel filesystems: /proc and /sys from the host, a private /dev with the usual devices.
	for _, m := range []string{"proc", "sys"} {
		target := filepath.Join(root, m)
		if err := topLevelDir(target); err != nil {
			return "", err
		}
		if err := unix.Mount("/"+m, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return "", fmt.Errorf("mounting /%s: %w", m, err)
		}
	}
	dev := filepath.Join(root, "dev")
	if err := topLevelDir(dev); err != nil {
		return "", err
	}
	if err := unix.Mount("octo-dev", dev, "tmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
		return "", fmt.Errorf("mounting /dev: %w", err)
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		target := filepath.Join(dev, d)
		if err := os.WriteFile(target, nil, 0o666); err != nil {
			return "", fmt.Errorf("creating /dev/%s: %w", d, err)
		}
		if err := unix.Mount("/dev/"+d, target, "", unix.MS_BIND, ""); err != nil {
			return "", fmt.Errorf("mounting /dev/%s: %w", d, err)
		}
	}
	for _, d := range []string{"shm", "pts"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return "", fmt.Errorf("creating /dev/%s: %w", d, err)
		}
	}
	if err := unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return "", fmt.Errorf("mounting /dev/shm: %w", err)
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return "", fmt.Errorf("creating /dev/%s: %w", name, err)
		}
	}
	// A private /tmp (the overlay already makes it so; make sure it exists and is world-writable).
	if err := topLevelDir(filepath.Join(root, "tmp")); err != nil {
		return "", err
	}
	return root, nil
}

// topLevelDir makes sure a directory directly under the container root exists and is not a symlink (which
// would lead outside the root before chroot).
func topLevelDir(path string) error {
	st, err := os.Lstat(path)
	switch {
	case err == nil && st.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("%s in the image root is not a directory", filepath.Base(path))
	case os.IsNotExist(err):
		mode := os.FileMode(0o755)
		if filepath.Base(path) == "tmp" {
			mode = 0o1777
		}
		if err := os.Mkdir(path, mode); err != nil {
			return fmt.Errorf("creating /%s in the container root: %w", filepath.Base(path), err)
		}
		return os.Chmod(path, mode)
	default:
		return fmt.Errorf("checking /%s in the container root: %w", filepath.Base(path), err)
	}
}

// makeMountPoint creates a directory or an empty file at target inside the (chrooted) container root.
func makeMountPoint(target string, dir bool) error {
	if dir {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("creating mount point %s: %w", target, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("creating mount point %s: %w", target, err)
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("creating mount point %s: %w", target, err)
	}
	return f.Close()
}

// lookPath finds argv0 in the container's PATH, inside the (chrooted) container root.
func lookPath(argv0 string, env []string) (string, error) {
	if strings.Contains(argv0, "/") {
		if _, err := os.Stat(argv0); err != nil {
			return "", fmt.Errorf("exec: %q: no such file or directory in the image", argv0)
		}
		return argv0, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, d := range filepath.SplitList(path) {
		p := filepath.Join(d, argv0)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", argv0)
}
