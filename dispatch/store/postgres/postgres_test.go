package postgres

import (
	"io"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/octo-worker/octo-worker/dispatch/store"
	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
	"github.com/octo-worker/octo-worker/dispatch/store/storetest"
)

// openTemp opens a store on a fresh database.
func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), pgtest.URL(t), WithLogger(quietLogger()))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// quietLogger discards what the store logs (a migration per test database).
func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// TestConformance runs the store's conformance suite, each case on a fresh database.
func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTemp(t)
	})
}
