package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/dispatchtest/cutproxy"
	"github.com/octo-worker/octo-worker/dispatch/pkgfiles"
)

// packagesConfig is testConfig with a package directory in the test's temp dir.
func packagesConfig(t *testing.T) Config {
	t.Helper()
	files, err := pkgfiles.Open(filepath.Join(t.TempDir(), "packages"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Packages = files
	return cfg
}

// writeRandom writes n deterministic pseudo-random bytes to a new file in dir and returns its path and sha256.
func writeRandom(t *testing.T, dir, name string, n int64) (string, string) {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rand.NewChaCha8([32]byte{byte(n)}), n)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

// TestPackageUploadResumesAfterCut: a push whose connection breaks half way continues from the server's
// offset (it does not send the file again), and the package it names is the file.
func TestPackageUploadResumesAfterCut(t *testing.T) {
	t.Parallel()
	b := setup(t, packagesConfig(t))
	const size = 8 << 20
	file, sum := writeRandom(t, t.TempDir(), "app-1.0.tgz", size)
	// The first connection carries the POST that starts the upload, then the PATCH: cut it half way through.
	proxy := cutproxy.Start(t, strings.TrimPrefix(b.url, "http://"), size/2, 0)
	cl, err := client.New(client.Config{Server: proxy.URL, Token: adminToken, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := cl.PushPackage(b.ctx, file, "", "1.0")
	if err != nil {
		t.Fatalf("PushPackage: %v", err)
	}
	if want := (api.Package{Name: "app-1.0", Version: "1.0", SHA256: sum, Size: size, FileName: "app-1.0.tgz"}); p.Name != want.Name || p.Version != want.Version ||
		p.SHA256 != want.SHA256 || p.Size != want.Size || p.FileName != want.FileName {
		t.Errorf("PushPackage = %+v, want %+v", p, want)
	}
	if !proxy.Cut.Load() {
		t.Fatal("the proxy cut nothing")
	}
	if up := proxy.Up.Load(); up > size+size/4 {
		t.Errorf("the client sent %d bytes for a %d-byte file cut at %d: it sent the file again instead of resuming", up, size, size/2)
	}
	stored, err := os.ReadFile(b.srv.cfg.Packages.Path(sum))
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(stored); hex.EncodeToString(got[:]) != sum {
		t.Error("the stored content differs from the file")
	}
	// Pushing it again sends nothing and names the same package.
	again, err := b.admin.PushPackage(b.ctx, file, "", "1.0")
	if err != nil || again != p {
		t.Errorf("PushPackage again = %+v, %v; want %+v", again, err, p)
	}
}

// TestPackageUploadRefusals: a wrong declared sha256 is refused and the upload discarded; a package over the
// server's size limit is refused with 413 naming the limit; an append at the wrong offset says where to
// continue; a name and version that hold other content are refused.
func TestPackageUploadRefusals(t *testing.T) {
	t.Parallel()
	cfg := packagesConfig(t)
	cfg.MaxPackageSize = 1000
	b := setup(t, cfg)
	data := []byte(strings.Repeat("package content ", 10))
	wrong := strings.Repeat("ab", 32)
	ctx := b.ctx
	call := func(method, path string, offset int64, body []byte) (*http.Response, api.Error) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, b.url+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if offset >= 0 {
			req.Header.Set(api.HeaderUploadOffset, strconvI(offset))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e api.Error
		_ = jsonDecode(resp.Body, &e)
		return resp, e
	}
	start := func(sha string, size int) (*http.Response, api.Error) {
		return call("POST", "/api/v1/packages/uploads", -1, []byte(`{"sha256":"`+sha+`","size":`+strconvI(int64(size))+`}`))
	}

	resp, e := start(wrong, 1001)
	if resp.StatusCode != 413 || e.Code != api.CodeTooLarge || e.Field != "size" || !strings.Contains(e.Error, "at most 1000 bytes") {
		t.Errorf("an upload over the limit: %d %+v, want 413 naming the limit", resp.StatusCode, e)
	}
	if resp, _ = start(wrong, len(data)); resp.StatusCode != 201 {
		t.Fatalf("start: %d", resp.StatusCode)
	}
	resp, e = call("PATCH", "/api/v1/packages/uploads/"+wrong, 5, data)
	if resp.StatusCode != 409 || e.Code != api.CodeOffsetMismatch || resp.Header.Get(api.HeaderUploadOffset) != "0" {
		t.Errorf("an append at the wrong offset: %d %+v (offset %q), want 409 offset_mismatch at 0", resp.StatusCode, e, resp.Header.Get(api.HeaderUploadOffset))
	}
	resp, e = call("PATCH", "/api/v1/packages/uploads/"+wrong, 0, data)
	if resp.StatusCode != 422 || e.Code != api.CodeChecksumMismatch || e.Field != "sha256" {
		t.Errorf("content that does not hash to the declared sha256: %d %+v, want 422 checksum_mismatch", resp.StatusCode, e)
	}
	if resp, _ = call("GET", "/api/v1/packages/uploads/"+wrong, -1, nil); resp.StatusCode != 404 {
		t.Errorf("the refused upload after the refusal: %d, want 404 (discarded)", resp.StatusCode)
	}
	if _, err := b.admin.Submit(ctx, api.OperationSpec{Pool: "p", Script: "ls", Packages: []string{"app@1.0"}}); err == nil {
		t.Error("a submit naming a package the server does not hold was accepted")
	} else if e, _ := api.AsStatusError(err); e.Status != 422 || e.Body.Field != "packages[0]" {
		t.Errorf("a submit naming an unknown package: %v, want 422 on packages[0]", err)
	}

	dir := t.TempDir()
	one, _ := writeRandom(t, dir, "one.zip", 100)
	two, _ := writeRandom(t, dir, "two.zip", 200)
	if _, err := b.admin.PushPackage(ctx, one, "app", "1.0"); err != nil {
		t.Fatal(err)
	}
	_, err := b.admin.PushPackage(ctx, two, "app", "1.0")
	if e, _ := api.AsStatusError(err); e == nil || e.Status != 409 || e.Body.Field != "version" {
		t.Errorf("pushing other content as app@1.0: %v, want 409 on version", err)
	}
	b.pool("p")
	_, err = b.admin.Deploy(ctx, api.DeploymentSpec{Name: "d", Pool: "p", Steps: []api.OperationSpec{
		{Script: "ls", Packages: []string{"app@1.0"}}, {Script: "ls", Packages: []string{"app@2.0"}}}})
	if e, _ := api.AsStatusError(err); e == nil || e.Status != 422 || e.Body.Field != "steps[1].packages[0]" {
		t.Errorf("a deployment step naming an unknown package: %v, want 422 on steps[1].packages[0]", err)
	}
}

// TestPodReadsOnlyItsPackages: a pod token downloads its own operation's packages (a range too) and no other.
func TestPodReadsOnlyItsPackages(t *testing.T) {
	t.Parallel()
	b := setup(t, packagesConfig(t))
	b.pool("p")
	dir := t.TempDir()
	fileA, shaA := writeRandom(t, dir, "a.bin", 1000)
	fileB, shaB := writeRandom(t, dir, "b.bin", 2000)
	pa, err := b.admin.PushPackage(b.ctx, fileA, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.PushPackage(b.ctx, fileB, "b", ""); err != nil {
		t.Fatal(err)
	}
	if pa.Version != shaA[:12] {
		t.Errorf("default version %q, want %q", pa.Version, shaA[:12])
	}
	w, _ := b.worker("w", []string{"p"})
	b.submit(api.OperationSpec{Pool: "p", Packages: []string{pa.Ref()}})
	la := b.lease(w)
	b.submit(api.OperationSpec{Pool: "p", Packages: []string{"b@" + shaB[:12]}})
	lb := b.lease(w)
	if len(la.Operation.ResolvedPackages) != 1 || la.Operation.ResolvedPackages[0].SHA256 != shaA {
		t.Fatalf("the lease's packages = %+v, want a", la.Operation.ResolvedPackages)
	}
	get := func(token, sha, rng string) (int, []byte) {
		req, _ := http.NewRequestWithContext(b.ctx, "GET", b.url+"/api/v1/pod/packages/"+sha, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	want, _ := os.ReadFile(fileA)
	if code, body := get(la.PodToken, shaA, ""); code != 200 || !bytes.Equal(body, want) {
		t.Errorf("the pod's own package: %d, %d bytes; want 200 and its content", code, len(body))
	}
	if code, body := get(la.PodToken, shaA, "bytes=900-"); code != 206 || !bytes.Equal(body, want[900:]) {
		t.Errorf("a range of it: %d, %d bytes; want 206 and the last 100 bytes", code, len(body))
	}
	for _, c := range []struct{ token, sha, what string }{
		{la.PodToken, shaB, "another operation's package"},
		{lb.PodToken, shaA, "another operation's package"},
	} {
		if code, body := get(c.token, c.sha, ""); code != 403 {
			t.Errorf("%s: %d %s, want 403", c.what, code, body)
		}
	}
	if code, _ := get(adminToken, shaA, ""); code != 403 {
		t.Errorf("the admin token on the pod route: %d, want 403", code)
	}
}

// TestPackageMemoryBounded: a 200 MB package goes up and down through the server with a bounded heap (it
// streams: nothing holds the content). The figures are logged (go test -v -run TestPackageMemoryBounded).
func TestPackageMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 400 MB to disk")
	}
	b := setup(t, packagesConfig(t))
	b.pool("p")
	const size = 200 << 20
	file, sum := writeRandom(t, t.TempDir(), "big.tar", size)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	measure := func(what string) uint64 {
		t.Helper()
		p := peak.Swap(0)
		grew := int64(p) - int64(base.HeapInuse)
		t.Logf("%s of %d MiB: peak heap in use %.1f MiB (%.1f MiB above the %.1f MiB before)", what, size>>20,
			float64(p)/(1<<20), float64(grew)/(1<<20), float64(base.HeapInuse)/(1<<20))
		if grew > 32<<20 {
			t.Errorf("%s: the heap grew by %d MiB: something holds the content in memory", what, grew>>20)
		}
		return p
	}
	pkg, err := b.admin.PushPackage(b.ctx, file, "big", "1")
	if err != nil {
		t.Fatal(err)
	}
	measure("upload")
	w, _ := b.worker("w", []string{"p"})
	b.submit(api.OperationSpec{Pool: "p", Packages: []string{pkg.Ref()}})
	l := b.lease(w)
	h := sha256.New()
	if err := b.podClient(l.PodToken).DownloadPackage(b.ctx, sum, size, h); err != nil {
		t.Fatal(err)
	}
	measure("download")
	close(stop)
	wg.Wait()
	if hex.EncodeToString(h.Sum(nil)) != sum {
		t.Error("the download differs from the upload")
	}
}

func strconvI(n int64) string { return strconv.FormatInt(n, 10) }

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// TestCreatePackageClaimsContent: naming stored content in a package marks it in use now, so a retention run
// that found the content unused a moment before (its old package deleted) keeps it rather than leaving the
// new package without content.
func TestCreatePackageClaimsContent(t *testing.T) {
	t.Parallel()
	b := setup(t, packagesConfig(t))
	file, sum := writeRandom(t, t.TempDir(), "tool.tgz", 4096)
	if _, err := b.admin.PushPackage(b.ctx, file, "tool", "1"); err != nil {
		t.Fatal(err)
	}
	files := b.srv.cfg.Packages
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(files.Path(sum), old, old); err != nil {
		t.Fatal(err)
	}
	// Name the content again without an upload (the step a push ends with).
	body, _ := json.Marshal(api.CreatePackageRequest{Name: "tool", Version: "2", SHA256: sum, FileName: "tool.tgz"})
	req, _ := http.NewRequestWithContext(b.ctx, "POST", b.url+"/api/v1/packages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating tool@2: %s", resp.Status)
	}
	if removed, err := files.RemoveUnused(sum, time.Now().Add(-time.Hour)); err != nil || removed {
		t.Fatalf("retention removed content a package named after its cutoff: removed=%v, %v", removed, err)
	}
}
