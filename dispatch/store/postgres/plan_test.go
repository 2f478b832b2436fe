package postgres

import (
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// TestClaimUsesQueueIndex guards the claim's cost: with history and a queue in two pools, the pick (and the
// look for work before it) must search the partial queue index, not walk the primary key or scan the table,
// or every long-poll costs as much as history is long. It fails when the statements stop fitting the index's
// predicate. Both plans PostgreSQL may choose for a prepared statement (custom and generic) are checked.
// (PostgreSQL has no INDEXED BY: the planner chooses by statistics, and on a table that is almost all queue,
// in one pool, it may walk the primary key instead; there the first row it meets is usually the one.)
func TestClaimUsesQueueIndex(t *testing.T) {
	t.Parallel()
	s := servers(t, 1, 10, "w")[0]
	ctx := t.Context()
	if err := s.CreatePool(ctx, api.Pool{Name: "q", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, 3000)
	if _, err := s.pool.Exec(ctx, `UPDATE operations SET state = 'succeeded' WHERE seq <= 2500;
		UPDATE operations SET pool = 'q' WHERE seq % 2 = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE operations`); err != nil {
		t.Fatal(err)
	}
	p := store.ClaimParams{WorkerID: "w", LeaseID: "l", Now: now, ExpiresAt: now.Add(time.Minute)}
	match := []any{[]string{"p", "q"}, `["gpu"]`, []string{"big"}}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		for name, q := range map[string]struct {
			sql  string
			args []any
		}{
			"claim":     {claimSQL, append(leaseArgs(p), append(match, sinceNanos(time.Time{}))...)},
			"claimable": {claimableSQL, append([]any{"w", "r"}, match...)},
		} {
			rows, err := conn.Query(ctx, `EXPLAIN (COSTS OFF) `+q.sql, q.args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			joined := strings.Join(plan, "\n")
			if !strings.Contains(joined, "using operations_queue on operations o") || strings.Contains(joined, "Seq Scan on operations") ||
				strings.Contains(joined, "using operations_pkey on operations o") {
				t.Errorf("%s (%s) does not search the queue index:\n%s", name, mode, joined)
			}
		}
		conn.Release()
	}
}
