//go:build !linux

package podrunner

import "github.com/octo-worker/octo-worker/dispatch/api"

// meter measures nothing where the runner cannot run (it runs in Linux pods only).
type meter struct{}

func startMeter() *meter          { return &meter{} }
func (m *meter) stop() *api.Usage { return nil }
