package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// TestPackageReachesScriptPod: a 200 MB package, generated here, is pushed to the dispatch server and reaches
// the script pod byte-identical (the script prints its sha256), downloaded by the pod itself.
func TestPackageReachesScriptPod(t *testing.T) {
	t.Parallel()
	e := setup(t, agentOptions{})
	file := filepath.Join(e.dir, "big.bin")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rand.NewChaCha8([32]byte{42}), 200<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	p, err := e.admin.PushPackage(context.Background(), file, "", "1.0")
	if err != nil {
		t.Fatalf("PushPackage: %v", err)
	}
	id := e.submit(api.OperationSpec{Script: "sha256sum big.bin | cut -d' ' -f1", Packages: []string{"big.bin@1.0"}})
	op := e.wait(id)
	if op.State != api.StateSucceeded {
		t.Fatalf("state %s (%s); log:\n%s", op.State, op.Message, e.dump(id))
	}
	if got := texts(e.logs(id), api.StreamStdout); strings.Join(got, "") != sum || p.SHA256 != sum {
		t.Errorf("the script pod saw sha256 %q (pushed %s), want %s", got, p.SHA256, sum)
	}
}
