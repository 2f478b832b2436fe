package advise

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

const mi = 1 << 20

// samples returns one sample per peak (in Mi), each running 10 s with cores[i] average cores.
func samples(source string, peaksMi []int64, cores []float64) []store.UsageSample {
	var out []store.UsageSample
	for i, p := range peaksMi {
		out = append(out, store.UsageSample{Usage: api.Usage{PeakMemoryBytes: p * mi, CPUSeconds: cores[i] * 10, Source: source},
			Duration: 10 * time.Second})
	}
	return out
}

func TestRequests(t *testing.T) {
	tests := []struct {
		name       string
		samples    []store.UsageSample
		want       api.Resources
		wantMemory api.Distribution // in Mi
		reason     string
	}{
		{
			name: "ten runs: memory p90 plus 20%, cpu median",
			samples: samples(api.UsageCgroup, []int64{100, 110, 120, 130, 140, 150, 160, 170, 200, 1000},
				[]float64{0.1, 0.1, 0.2, 0.2, 0.25, 0.3, 0.3, 0.4, 0.5, 2}),
			// p90 of 10 peaks is the 9th (200Mi); +20% = 240Mi. Median cores: the 5th of 10 (0.25) → 250m.
			want:       api.Resources{CPU: "250m", Memory: "240Mi"},
			wantMemory: api.Distribution{Min: 100, Median: 140, P90: 200, Max: 1000},
			reason:     "the 90th percentile of 10 peaks plus 20%",
		},
		{
			name:       "tiny scripts get the floor: 16Mi and 10m",
			samples:    samples(api.UsageCgroup, []int64{1, 1, 1, 1, 1}, []float64{0, 0, 0, 0, 0.001}),
			want:       api.Resources{CPU: "10m", Memory: "16Mi"},
			wantMemory: api.Distribution{Min: 1, Median: 1, P90: 1, Max: 1},
			reason:     "the median of 5 runs' average cores",
		},
		{
			name:       "rusage peaks are flagged as a lower bound",
			samples:    samples(api.UsageRusage, []int64{50, 50, 50, 50, 50}, []float64{1, 1, 1, 1, 1}),
			want:       api.Resources{CPU: "1", Memory: "60Mi"},
			wantMemory: api.Distribution{Min: 50, Median: 50, P90: 50, Max: 50},
			reason:     "5 of the peaks are of the largest single process",
		},
		{
			name:       "too few samples: no advice, the numbers still shown",
			samples:    samples(api.UsageCgroup, []int64{10, 20, 30, 40}, []float64{1, 1, 1, 1}),
			wantMemory: api.Distribution{Min: 10, Median: 20, P90: 40, Max: 40},
			reason:     "4 ended operations with a measured usage (4 with a run time); advice needs at least 5",
		},
		{
			name:   "none",
			reason: "0 ended operations",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Requests("p", "build", tt.samples)
			if a.Pool != "p" || a.Step != "build" || a.Samples != len(tt.samples) {
				t.Errorf("advice names pool %q step %q with %d samples", a.Pool, a.Step, a.Samples)
			}
			if a.Requests != tt.want {
				t.Errorf("requests = %+v, want %+v", a.Requests, tt.want)
			}
			m := a.Memory
			gotMi := api.Distribution{Min: m.Min / mi, Median: m.Median / mi, P90: m.P90 / mi, Max: m.Max / mi}
			if !cmp.Equal(gotMi, tt.wantMemory) {
				t.Errorf("memory (Mi) = %+v, want %+v", gotMi, tt.wantMemory)
			}
			if !strings.Contains(a.Reason, tt.reason) {
				t.Errorf("reason = %q, want it to contain %q", a.Reason, tt.reason)
			}
		})
	}
}

// A sample without a run time (the operation never started) counts for memory but not for CPU.
func TestRequestsWithoutRunTime(t *testing.T) {
	s := samples(api.UsageCgroup, []int64{10, 10, 10, 10, 10, 10}, []float64{1, 1, 1, 1, 1, 1})
	s[0].Duration, s[1].Duration = 0, 0
	a := Requests("p", "", s)
	if a.Requests != (api.Resources{}) || !strings.Contains(a.Reason, "(4 with a run time)") {
		t.Errorf("advice from 4 timed runs = %+v, %q; want none", a.Requests, a.Reason)
	}
}
