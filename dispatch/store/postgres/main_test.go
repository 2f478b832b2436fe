package postgres

import (
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/store/postgres/pgtest"
)

// TestMain stops the test PostgreSQL that pgtest.URL started.
func TestMain(m *testing.M) { pgtest.Main(m) }
