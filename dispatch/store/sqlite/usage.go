package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// UsageSamples returns the measured usage of the newest ended operations of a pool (of one name when given).
func (s *Store) UsageSamples(ctx context.Context, f store.UsageFilter) ([]store.UsageSample, error) {
	if f.Pool == "" || f.Limit <= 0 {
		return nil, fmt.Errorf("usage samples need a pool and a positive limit: %w", store.ErrInvalid)
	}
	rows, err := s.rQuery(ctx, `SELECT usage, started_at, finished_at FROM operations
		WHERE pool = ? AND usage IS NOT NULL AND (? = '' OR name = ?)
		ORDER BY finished_at DESC LIMIT ?`, f.Pool, f.Name, f.Name, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("reading usage of pool %s: %w", f.Pool, err)
	}
	defer rows.Close()
	var out []store.UsageSample
	for rows.Next() {
		var usage string
		var started, finished sql.NullInt64
		if err := rows.Scan(&usage, &started, &finished); err != nil {
			return nil, fmt.Errorf("reading usage of pool %s: %w", f.Pool, err)
		}
		var smp store.UsageSample
		if err := json.Unmarshal([]byte(usage), &smp.Usage); err != nil {
			return nil, fmt.Errorf("decoding usage in pool %s: %w", f.Pool, err)
		}
		if started.Valid && finished.Valid && finished.Int64 > started.Int64 {
			smp.Duration = time.Duration(finished.Int64 - started.Int64)
		}
		out = append(out, smp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading usage of pool %s: %w", f.Pool, err)
	}
	return out, nil
}
