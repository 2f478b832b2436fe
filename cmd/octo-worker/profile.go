package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// profileEnv names a directory where the process writes a CPU profile of its whole run
// (octo-worker-<pid>.pprof), for the benchmarks (e2e/agent's BenchmarkLogThroughput sets it with
// OCTO_BENCH_PROFILE). Unset, nothing is profiled.
const profileEnv = "OCTO_CPU_PROFILE"

// startProfile starts the CPU profile profileEnv asks for and returns what stops it; a profile that cannot be
// written is reported and skipped, never a reason to fail.
func startProfile(args []string) (stop func()) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("octo-worker-%d.pprof", os.Getpid())))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "octo-worker: %s: not profiling: %v\n", profileEnv, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
