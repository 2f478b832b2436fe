package chartgen

import (
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// LogLimitBytes is scriptPods.logLimit in bytes (validated), api.DefaultLogLimit when it is empty.
func (s ScriptPods) LogLimitBytes() int64 {
	q, err := resource.ParseQuantity(string(s.LogLimit))
	if s.LogLimit == "" || err != nil {
		return api.DefaultLogLimit
	}
	return q.Value()
}

// checkLogLimit refuses a log limit outside the protocol's bounds (a malformed or non-positive one is the
// format check's).
func checkLogLimit(ps *problems, q Quantity) {
	v, err := resource.ParseQuantity(string(q))
	if q == "" || err != nil || v.Sign() <= 0 || (v.Value() >= api.MinLogLimit && v.Value() <= api.MaxLogLimit) {
		return
	}
	ps.add("scriptPods.logLimit", "%q is out of range: give 1Mi..10Gi (the most log the server keeps of one operation)", string(q))
}
