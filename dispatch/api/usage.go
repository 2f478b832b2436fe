package api

// Usage is what an operation's script consumed, as its runner measured it in the script pod: the basis of the
// requests advice (`octo-worker requests advise`).
type Usage struct {
	// PeakMemoryBytes is the most memory the script's processes held at once: the container's cgroup peak
	// when the runner can read its own cgroup, else the largest peak resident set of one process.
	PeakMemoryBytes int64 `json:"peak_memory_bytes"`
	// CPUSeconds is the processor time (user + system) the script's processes used.
	CPUSeconds float64 `json:"cpu_seconds"`
	// Source says how it was measured: UsageCgroup or UsageRusage.
	Source string `json:"source"`
}

// How a Usage was measured.
const (
	UsageCgroup = "cgroup" // the script container's own cgroup (v2: memory.peak, cpu.stat)
	UsageRusage = "rusage" // getrusage of the runner's children: the largest single process, a lower bound
)

// Bounds of a Usage a server accepts (a script can forge its runner's records: the key is in its pod).
const (
	MaxUsageMemoryBytes = 1 << 50 // 1 PiB
	MaxUsageCPUSeconds  = 1e9
)

// RequestsAdvice recommends script pod requests from the usage of recent operations (GET
// /api/v1/requests/advice?pool=P&step=NAME).
type RequestsAdvice struct {
	Pool string `json:"pool,omitempty"`
	Step string `json:"step,omitempty"` // an operation's name; empty: every operation of the pool
	// Samples is the number of ended operations with a measured usage the advice rests on (at most
	// MaxAdviceSamples, the newest).
	Samples int `json:"samples"`
	// Memory and CPU describe the distribution: memory in bytes of peak use, CPU in cores (CPU seconds over
	// the run's duration).
	Memory Distribution `json:"memory"`
	CPU    Distribution `json:"cpu"`
	// Requests is the recommendation as Kubernetes quantities: memory the 90th percentile of peaks plus
	// AdviceHeadroom, CPU the median of average cores; empty when there are fewer than MinAdviceSamples.
	Requests Resources `json:"requests,omitzero"`
	// Reason says why there is no recommendation, or what it rests on.
	Reason string `json:"reason"`
}

// Distribution summarises observed values.
type Distribution struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Max    float64 `json:"max"`
}

// Limits of the requests advice.
const (
	MaxAdviceSamples = 1000 // the newest operations the advice looks at
	MinAdviceSamples = 5    // fewer: no recommendation
	AdviceHeadroom   = 0.2  // memory requested above the 90th percentile of peaks
)
