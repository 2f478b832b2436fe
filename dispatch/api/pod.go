package api

// The script pod's channel to the server (PROTOCOL.md, "The script pod's channel"): the runner in the pod calls
// the /api/v1/pod/ routes with the pod token of its operation's lease (Lease.PodToken), to push the sealed
// records the kubelet may no longer serve.

// PodTokenPrefix starts every pod token (a human sees the kind; authentication never relies on it).
const PodTokenPrefix = "octo-pod-"

// PodLogState is how far the server holds the pod's operation's log: LastSeq is the highest seq it holds
// contiguously from 1, End says that it holds the runner's end-of-stream marker (pushed by the pod).
type PodLogState struct {
	LastSeq int64 `json:"last_seq"`
	End     bool  `json:"end,omitempty"`
}

// PodLogsRequest pushes records exactly as the runner printed them (seq|time|stream|sealed payload, without
// the newline); the server opens them with the operation's sealing key. The end-of-stream marker may be one
// of them (the last).
type PodLogsRequest struct {
	Records []string `json:"records"`
}

// PodEnd is the runner's end-of-stream marker as the pod pushed it: Seq is the number of lines the runner
// wrote before it, ExitCode the script's. The worker still decides the result (it cross-checks the container's
// state); it learns the marker from this when the kubelet no longer has it.
type PodEnd struct {
	Seq      int64 `json:"seq"`
	ExitCode int   `json:"exit_code"`
}

// MaxPodPushBytes bounds the records of one push (a record is at most about 11 KiB: logline.MaxPayload
// sealed and in base64), so that a push stays well within the log route's body limit.
const MaxPodPushBytes = 4 << 20
