package validate

import (
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// A worker's allow-list and a step's overrides are refused, naming the field, when malformed.
func TestOverridesAndPolicyForm(t *testing.T) {
	t.Parallel()
	sel := func(k, v string) map[string]string { return map[string]string{k: v} }
	tests := []struct {
		field string
		err   error
	}{
		{"allow_overrides.node_selector.zone", Policy("allow_overrides", &api.OverridePolicy{NodeSelector: sel("zone", "eu-(")})},
		{"overrides.node_selector.zone", Overrides("overrides", &api.PodOverrides{NodeSelector: sel("zone", "eu west")})},
		{"overrides.node_selector.a b", Overrides("overrides", &api.PodOverrides{NodeSelector: sel("a b", "x")})},
		{"overrides.tolerations[0]", Overrides("overrides", &api.PodOverrides{Tolerations: []api.Toleration{{Key: "k", Operator: "Exists", Value: "v"}}})},
		{"overrides.tolerations[0]", Overrides("overrides", &api.PodOverrides{Tolerations: []api.Toleration{{Key: "k", Effect: "Never"}}})},
		{"profiles[0]", profiles("profiles", []string{"GPU"})},
		{"", Overrides("overrides", &api.PodOverrides{NodeSelector: sel("zone", "eu-1"), Tolerations: []api.Toleration{{Key: "spot", Operator: "Exists"}}})},
	}
	for _, tt := range tests {
		e, _ := tt.err.(*Error)
		if (tt.field == "") != (tt.err == nil) || e != nil && e.Field != tt.field {
			t.Errorf("got %v, want an error naming %q", tt.err, tt.field)
		}
	}
}
