package kubelet

import "testing"

func TestExpand(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"A": "1", "B": "two"}
	cases := map[string]string{
		"plain":         "plain",
		"$(A)":          "1",
		"x-$(A)-$(B)-y": "x-1-two-y",
		"$(MISSING)":    "$(MISSING)",
		"$$(A)":         "$(A)",
		"cost $5":       "cost $5",
		"unclosed $(A":  "unclosed $(A",
		"trailing $":    "trailing $",
	}
	for in, want := range cases {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}
