package jobrunner

import (
	"testing"

	"go.uber.org/goleak"
)

// No test may leave a goroutine behind (shippers and followers stop with their context).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
