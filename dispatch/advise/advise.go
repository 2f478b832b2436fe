// Package advise recommends script pod requests from what ended operations consumed (their runners' measured
// peak memory and CPU seconds): memory at the 90th percentile of peaks plus headroom, so one pod in ten may
// go past its request (requests are not limits: it still runs), CPU at the median of average cores, since
// scripts burst and wait. It is a pure function of the samples; the server reads them from the store.
package advise

import (
	"fmt"
	"math"
	"sort"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Smallest requests it recommends: below them the scheduler's packing is no longer what limits a node.
const (
	minMemory   = 16 << 20 // 16Mi
	minMilliCPU = 10       // 10m
)

// Requests summarises samples (newest first, as the store returns them) into advice for a pool or a step.
func Requests(pool, step string, samples []store.UsageSample) api.RequestsAdvice {
	a := api.RequestsAdvice{Pool: pool, Step: step, Samples: len(samples)}
	var mem, cores []float64
	rusage := 0
	for _, s := range samples {
		mem = append(mem, float64(s.Usage.PeakMemoryBytes))
		if s.Duration > 0 {
			cores = append(cores, s.Usage.CPUSeconds/s.Duration.Seconds())
		}
		if s.Usage.Source == api.UsageRusage {
			rusage++
		}
	}
	a.Memory, a.CPU = summarise(mem), summarise(cores)
	if len(samples) < api.MinAdviceSamples || len(cores) < api.MinAdviceSamples {
		a.Reason = fmt.Sprintf("%d ended operations with a measured usage (%d with a run time); advice needs at least %d", len(samples), len(cores), api.MinAdviceSamples)
		return a
	}
	memBytes := max(int64(math.Ceil(a.Memory.P90*(1+api.AdviceHeadroom))), minMemory)
	memBytes = (memBytes + 1<<20 - 1) &^ (1<<20 - 1)                 // whole Mi
	milli := max(int64(math.Ceil(a.CPU.Median*100))*10, minMilliCPU) // whole 10m
	a.Requests = api.Resources{
		CPU:    resource.NewMilliQuantity(milli, resource.DecimalSI).String(),
		Memory: resource.NewQuantity(memBytes, resource.BinarySI).String(),
	}
	a.Reason = fmt.Sprintf("memory: the 90th percentile of %d peaks plus %.0f%%; cpu: the median of %d runs' average cores", len(mem), api.AdviceHeadroom*100, len(cores))
	if rusage > 0 {
		a.Reason += fmt.Sprintf("; %d of the peaks are of the largest single process (the runner could not read its own cgroup), so memory may be low", rusage)
	}
	return a
}

// summarise returns the distribution of values (all zero when there are none); percentiles by nearest rank.
func summarise(values []float64) api.Distribution {
	if len(values) == 0 {
		return api.Distribution{}
	}
	v := append([]float64(nil), values...)
	sort.Float64s(v)
	rank := func(p float64) float64 { return v[max(int(math.Ceil(p*float64(len(v))))-1, 0)] }
	return api.Distribution{Min: v[0], Median: rank(0.5), P90: rank(0.9), Max: v[len(v)-1]}
}
