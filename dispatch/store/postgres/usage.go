package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// UsageSamples returns the measured usage of the newest ended operations of a pool (of one name when given),
// through the partial index operations_usage.
func (s *Store) UsageSamples(ctx context.Context, f store.UsageFilter) ([]store.UsageSample, error) {
	if f.Pool == "" || f.Limit <= 0 {
		return nil, fmt.Errorf("usage samples need a pool and a positive limit: %w", store.ErrInvalid)
	}
	rows, err := s.pool.Query(ctx, `SELECT usage, started_at, finished_at FROM operations
		WHERE pool = $1 AND usage IS NOT NULL AND ($2 = '' OR name = $2)
		ORDER BY finished_at DESC LIMIT $3`, f.Pool, f.Name, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("reading usage of pool %s: %w", f.Pool, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.UsageSample, error) {
		var usage string
		var started, finished *int64
		var smp store.UsageSample
		if err := r.Scan(&usage, &started, &finished); err != nil {
			return smp, err
		}
		if err := json.Unmarshal([]byte(usage), &smp.Usage); err != nil {
			return smp, fmt.Errorf("decoding usage: %w", err)
		}
		if started != nil && finished != nil && *finished > *started {
			smp.Duration = time.Duration(*finished - *started)
		}
		return smp, nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading usage of pool %s: %w", f.Pool, err)
	}
	return out, nil
}
