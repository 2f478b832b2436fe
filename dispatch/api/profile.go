package api

// Pod profiles (PROTOCOL.md, Pod profiles). Only the overrides below exist: a step can never change the
// command, restartPolicy, the runner's volumes or the security context; the wire has no field for them.

// Limits on profiles and overrides.
const (
	// MaxProfiles bounds the profiles one worker offers.
	MaxProfiles = 64
	// MaxOverrideItems bounds the node selector entries and the tolerations of overrides and allow-lists.
	MaxOverrideItems = 16
	// MaxPatternLen bounds one node selector value pattern of an allow-list.
	MaxPatternLen = 256
)

// CodeProfile (422): no registered worker of the pool offers the step's profile, or none allows its
// overrides; Field names the value at fault.
const CodeProfile = "profile_unavailable"

// PodOverrides are a step's changes to its pod beyond its profile, where the worker's OverridePolicy allows
// them: NodeSelector entries are merged over the profile's, Tolerations added.
type PodOverrides struct {
	NodeSelector map[string]string `json:"node_selector,omitempty"`
	Tolerations  []Toleration      `json:"tolerations,omitempty"`
}

// Empty reports whether the overrides change nothing.
func (o *PodOverrides) Empty() bool {
	return o == nil || len(o.NodeSelector) == 0 && len(o.Tolerations) == 0
}

// Toleration is a Kubernetes toleration (without tolerationSeconds).
type Toleration struct {
	Key      string `json:"key,omitempty"`
	Operator string `json:"operator,omitempty"` // Equal (default) or Exists
	Value    string `json:"value,omitempty"`
	Effect   string `json:"effect,omitempty"` // NoSchedule, PreferNoSchedule, NoExecute or empty for all
}

// OverridePolicy is what a worker lets a step override. NodeSelector maps each node label key a step may set
// to a regular expression (RE2, matched against the whole value) its value must match; Tolerations lists the
// tolerations a step may add, each exactly as listed. A nil policy allows nothing.
type OverridePolicy struct {
	NodeSelector map[string]string `json:"node_selector,omitempty"`
	Tolerations  []Toleration      `json:"tolerations,omitempty"`
}
