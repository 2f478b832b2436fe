package sqlite

import (
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// history runs n operations of lines log lines each to their end at f.now.
func (f *diskFixture) history(t *testing.T, n, lines int) {
	t.Helper()
	batch := make([]api.LogLine, lines)
	for range n {
		f.enqueue(t, api.OperationSpec{Pool: "p", Script: "deploy"})
		ref := f.running(t)
		for j := range batch {
			batch[j] = api.LogLine{Seq: int64(j + 1), Time: f.now, Stream: api.StreamStdout,
				Text: fmt.Sprintf("%s: line %d of a deployment's output, long enough to fill pages", ref.OperationID, j+1)}
		}
		if _, err := f.s.AppendLogs(t.Context(), ref, batch); err != nil {
			t.Fatal(err)
		}
		f.finish(t, ref, api.StateSucceeded, 0)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// TestDeleteFinishedGivesPagesBack: deleting history gives its pages back to the file system: the database file
// shrinks once the WAL truncation after the delete ran, no page stays on the free list, and no log chunk of a
// deleted operation is left behind.
func TestDeleteFinishedGivesPagesBack(t *testing.T) {
	t.Parallel()
	f := openDisk(t)
	f.history(t, 200, 100)
	// The test truncates the WAL itself (the writer's own truncation may run before or after its calls).
	if !f.s.truncateWAL() {
		t.Fatal("truncating the WAL before measuring did not complete")
	}
	full := fileSize(t, f.path)
	n, err := f.s.DeleteFinished(t.Context(), f.now.Add(time.Second), 50)
	if err != nil || n != 200 {
		t.Fatalf("DeleteFinished = %d, %v; want 200", n, err)
	}
	if !f.s.truncateWAL() {
		t.Fatal("truncating the WAL after the delete did not complete")
	}
	after := fileSize(t, f.path)
	if after > full/4 {
		t.Errorf("database file is %d bytes after deleting everything, was %d; want it to shrink below a quarter", after, full)
	}
	var free, chunks int
	if err := f.s.r.QueryRow(`SELECT (SELECT freelist_count FROM pragma_freelist_count), (SELECT COUNT(*) FROM log_chunks)`).Scan(&free, &chunks); err != nil {
		t.Fatal(err)
	}
	if free != 0 || chunks != 0 {
		t.Errorf("after deleting everything: %d free pages and %d log chunks left, want 0 and 0", free, chunks)
	}
	t.Logf("database file: %d bytes with 200 operations of 100 lines, %d after deleting them", full, after)
}

// TestRetentionPicksUseIndexes guards the cost of a retention run: its picks search the partial indexes of
// what ended, never scan the tables, so a run costs what it deletes however long the history it keeps.
func TestRetentionPicksUseIndexes(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	for q, index := range map[string]string{pickOperationsSQL: "operations_finished", pickDeploymentsSQL: "deployments_finished"} {
		plan := queryPlan(t, s, q, sql.Named("before", 0), sql.Named("limit", 1))
		if !strings.Contains(plan, "SEARCH d USING INDEX "+index) && !strings.Contains(plan, "SEARCH operations USING INDEX "+index) ||
			strings.Contains(plan, "SCAN") {
			t.Errorf("plan of the pick does not search %s:\n%s", index, plan)
		}
	}
}

// TestOpenConvertsOldDatabaseToIncrementalVacuum: a database made without auto-vacuum (as every database was
// before) is converted once, at open, with a logged VACUUM, and keeps its data.
func TestOpenConvertsOldDatabaseToIncrementalVacuum(t *testing.T) {
	t.Parallel()
	s, path := openFile(t)
	if err := s.SetSetting(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	old, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var mode int
	if _, err := old.Exec(`PRAGMA auto_vacuum = NONE; VACUUM`); err != nil {
		t.Fatal(err)
	}
	if err := old.QueryRow(`PRAGMA auto_vacuum`).Scan(&mode); err != nil || mode != 0 {
		t.Fatalf("making an old database: auto_vacuum = %d, %v; want 0", mode, err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	log, hook := test.NewNullLogger()
	s, err = Open(t.Context(), path, WithLogger(log))
	if err != nil {
		t.Fatalf("Open of an old database: %v", err)
	}
	defer s.Close()
	if err := s.r.QueryRow(`PRAGMA auto_vacuum`).Scan(&mode); err != nil || mode != 2 {
		t.Errorf("auto_vacuum = %d, %v after Open; want 2 (incremental)", mode, err)
	}
	var warned int
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "VACUUM") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d warnings about the VACUUM, want 1: %v", warned, hook.AllEntries())
	}
	if v, err := s.Setting(t.Context(), "k"); err != nil || v != "v" {
		t.Errorf("after the conversion Setting = %q, %v", v, err)
	}
	if _, err := s.DeleteFinished(t.Context(), time.Now(), 500); err != nil {
		t.Errorf("DeleteFinished on the converted database: %v", err)
	}
}
