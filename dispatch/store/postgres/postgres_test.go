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

// notYet are the conformance cases of pg-logs' area (logs, log limit, pod channel, packages, retention,
// queue stats, usage), skipped until its methods replace the stubs in todo_logs.go. pg-logs removes this list.
var notYet = map[string]bool{
	"AppendLogs": true, "AppendLogsConflict": true, "LogLimit": true, "LogLimitUnderIt": true,
	"PodLease": true, "PodEnd": true, "QueueStats": true, "Retention": true, "RetentionBatches": true,
	"UsageSamples": true, "Packages": true, "OperationPackages": true, "PackageRetention": true,
	// These two are pg-core's (lease checks, finish) but append logs on the way.
	"LeaseChecks": true, "Finish": true,
}

// TestConformance runs the store's conformance suite, each case on a fresh database.
func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		if notYet[t.Name()[len("TestConformance/"):]] {
			t.Skip("pg-logs' area: not implemented in this driver yet")
		}
		return openTemp(t)
	})
}
