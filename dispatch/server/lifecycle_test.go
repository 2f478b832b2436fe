package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/client"
	"github.com/octo-worker/octo-worker/dispatch/store/sqlite"
)

// TestTLS serves over TLS with a certificate for 127.0.0.1 and talks to it with a client that trusts only
// that certificate.
func TestTLS(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dispatch"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	b := start(t, Config{}, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	c, err := client.New(client.Config{Server: b.url, Token: adminToken, CACertFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePool(t.Context(), "secure", ""); err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	untrusting, _ := client.New(client.Config{Server: b.url, Token: adminToken, RetryMax: -1})
	if _, err := untrusting.Pools(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the CA connected: %v", err)
	}
}

// TestShutdownEndsWaitingCalls: stopping the server ends a waiting long-poll at once (nothing leased) instead
// of holding the shutdown for the poll's 30 s; goleak in TestMain checks nothing is left running.
func TestShutdownEndsWaitingCalls(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig())
	b.pool("p")
	w, _ := b.worker("w", []string{"p"})
	// Stop the server once the worker waits in its long-poll.
	go func() {
		b.waitAsleep("the worker to wait", func(n int) bool { return n == 1 })
		_ = b.stop() // checked below
	}()
	l, err := w.Lease(t.Context(), 30*time.Second)
	if l != nil {
		t.Errorf("a shut-down server leased %+v", l)
	}
	_ = err // the retry after shutdown finds the port closed: an error is fine, a hang is not
	if err := b.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestAdminTokenGeneratedOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "d.db")
	open := func() *Server {
		st, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		srv, err := New(st, Config{}, logrusDiscard())
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	s1 := open()
	first, err := s1.InitAdminToken(t.Context(), "")
	if err != nil || !strings.HasPrefix(first, "owa_") || len(first) < 40 {
		t.Fatalf("first start generated %q, %v", first, err)
	}
	if err := s1.st.Close(); err != nil { // the restart: one store uses a SQLite file at a time
		t.Fatal(err)
	}
	s2 := open()
	second, err := s2.InitAdminToken(t.Context(), "")
	if err != nil || second != "" {
		t.Fatalf("second start generated %q, %v; want none (printed once)", second, err)
	}
	if !s2.isAdmin(hashToken(first)) {
		t.Error("the generated token does not authenticate after a restart")
	}
	if stored, _ := s2.st.Setting(t.Context(), adminTokenSetting); strings.Contains(stored, first) {
		t.Error("the token itself is stored")
	}
	if _, err := s2.InitAdminToken(t.Context(), "short"); err == nil {
		t.Error("a 5-character admin token was accepted")
	}
	if _, err := s2.InitAdminToken(t.Context(), "a-token-from-the-flag-1234"); err != nil || s2.isAdmin(hashToken(first)) {
		t.Errorf("--admin-token did not replace the generated token: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{LeaseTTL: 5 * time.Second, HeartbeatInterval: 5 * time.Second}).Validate(); err == nil {
		t.Error("a lease TTL equal to the heartbeat interval was accepted")
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
