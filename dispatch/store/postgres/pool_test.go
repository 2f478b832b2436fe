package postgres

import (
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
)

// TestPoolSize: a URL without pool_max_conns gets defaultMaxConns connections, not pgxpool's default (the
// client's core count, at least 4); one that sets it keeps its own.
func TestPoolSize(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	for _, c := range []struct {
		params string
		want   int32
	}{
		{"", defaultMaxConns},
		{"pool_max_conns=3", 3},
	} {
		u := url
		if c.params != "" {
			u += "&" + c.params
		}
		s, err := Open(t.Context(), u, WithLogger(quietLogger()))
		if err != nil {
			t.Fatalf("Open(%q): %v", c.params, err)
		}
		if got := s.pool.Config().MaxConns; got != c.want {
			t.Errorf("with %q: the pool holds %d connections, want %d", c.params, got, c.want)
		}
		_ = s.Close()
	}
}
