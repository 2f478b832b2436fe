package api

// An operation's log limit (LeaseRequest.LogLimit, the chart's scriptPods.logLimit). Past it the server keeps
// the log's head and tail and drops its middle, leaving one marker line at the cut (PROTOCOL.md, Logs). A
// line counts as the bytes the server stores for it: its text and about 35 bytes of seq, time and stream.
// There is no "unlimited": the limit is what bounds the server's disk per operation.
const (
	DefaultLogLimit = 100 << 20
	// MinLogLimit leaves room for a log's first and last lines beside a batch of the largest lines.
	MinLogLimit = 1 << 20
	MaxLogLimit = 10 << 30
)
