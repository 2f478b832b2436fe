package podrunner

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest/cutproxy"
)

// tarGz returns a .tar.gz of entries; a name ending in "->target" is a symbolic link.
func tarGz(t *testing.T, entries map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range entries {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if n, target, ok := strings.Cut(name, "->"); ok {
			h = &tar.Header{Name: n, Linkname: target, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); h.Typeflag == tar.TypeReg && err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	return buf.Bytes()
}

// leasedWithPackages pushes files as packages to a real dispatch server, submits an operation that references them and
// leases it: the runner spec and pod token a worker would hand its pod.
func leasedWithPackages(t *testing.T, srv *dispatchtest.Server, files map[string][]byte) (Spec, string) {
	t.Helper()
	dir := t.TempDir()
	var refs []string
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		pkg, err := srv.Admin.PushPackage(t.Context(), p, "", "")
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, pkg.Ref())
	}
	if _, err := srv.Admin.CreatePool(t.Context(), "p", ""); err != nil {
		t.Fatal(err)
	}
	w, _ := dispatchtest.Register(t, srv.Admin, api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "1", Capacity: 1})
	if _, err := srv.Admin.Submit(t.Context(), api.OperationSpec{Pool: "p", Script: "true", Packages: refs}); err != nil {
		t.Fatal(err)
	}
	l, err := w.Lease(t.Context(), 0)
	if err != nil || l == nil {
		t.Fatalf("Lease: %v, %v", l, err)
	}
	return Spec{OperationID: l.Operation.ID, Syntax: "sh", DispatchURL: srv.URL, Packages: l.Operation.ResolvedPackages}, l.PodToken
}

// TestPackagesResumeAfterCut: the runner downloads its packages from a real server through a proxy that cuts
// the download half way, resumes it, and the script finds them unpacked in its work directory.
func TestPackagesResumeAfterCut(t *testing.T) {
	t.Parallel()
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	big := make([]byte, 2<<20)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(big)
	sum := sha256.Sum256(big)
	spec, token := leasedWithPackages(t, srv, map[string][]byte{
		"big.bin":    big,
		"app.tar.gz": tarGz(t, map[string]string{"app/conf.txt": "conf ok", "app/link->conf.txt": ""}),
	})
	proxy := cutproxy.Start(t, srv.Addr, 0, 1<<20)
	spec.DispatchURL = proxy.URL
	spec.Script = "cat app/link; echo; sha256sum big.bin | cut -d' ' -f1; ls -A"
	res := run(t, spec, func(r *Runner) { r.PodToken = token })
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	if want := []string{"conf ok", hex.EncodeToString(sum[:]), "app", "big.bin"}; strings.Join(res.stdout, "|") != strings.Join(want, "|") {
		t.Errorf("stdout = %q, want %q", res.stdout, want)
	}
	if down := proxy.Down.Load(); down > int64(len(big))*3/2+1<<20 {
		t.Errorf("the runner received %d bytes for %d: it downloaded again instead of resuming", down, len(big))
	}
}

// TestPackageChecksumFailsBeforeScript: content that does not hash to the package's sha256 (corrupted on the
// server's disk here) fails the operation with the runner's exit code and a clear message; the script never
// runs.
func TestPackageChecksumFailsBeforeScript(t *testing.T) {
	t.Parallel()
	srv := dispatchtest.Start(t, dispatchtest.Options{})
	spec, token := leasedWithPackages(t, srv, map[string][]byte{"tool": []byte("the real tool")})
	if err := os.WriteFile(srv.Packages.Path(spec.Packages[0].SHA256), []byte("a forged tool"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec.Script = "echo the script ran"
	res := run(t, spec, func(r *Runner) { r.PodToken = token })
	if res.code != ExitRunnerError || len(res.stdout) > 0 {
		t.Errorf("exit %d, stdout %q; want %d and no script output", res.code, res.stdout, ExitRunnerError)
	}
	if msg := strings.Join(res.stderr, "\n"); !strings.Contains(msg, "package tool@") || !strings.Contains(msg, "hash to sha256:") {
		t.Errorf("stderr %q does not say which package failed its checksum", msg)
	}
}

// TestUnpackRefuses: archives that would write outside the work directory are refused.
func TestUnpackRefuses(t *testing.T) {
	t.Parallel()
	for name, entries := range map[string]map[string]string{
		"a path climbing out": {"../evil": "x"},
		"an absolute path":    {"/tmp/evil": "x"},
		"a link out":          {"link->../../etc": ""},
		"an absolute link":    {"link->/etc": ""},
	} {
		dir := t.TempDir()
		work := filepath.Join(dir, "work")
		_ = os.Mkdir(work, 0o755)
		src := filepath.Join(dir, "p.tgz")
		_ = os.WriteFile(src, tarGz(t, entries), 0o600)
		if err := Unpack(work, src, "p.tgz"); err == nil {
			t.Errorf("%s: unpacked, want a refusal", name)
		}
		if left, _ := os.ReadDir(dir); len(left) != 2 {
			t.Errorf("%s: %d entries beside the work directory, want none written", name, len(left)-2)
		}
	}
}
