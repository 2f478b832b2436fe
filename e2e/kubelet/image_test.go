package kubelet

import "testing"

func TestValidateImageName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		valid bool
	}{
		{"debian", true},
		{"debian:bookworm", true},
		{"octo-worker:e2e", true},
		{"registry.example.com:5000/team/tools:1.2.3", true},
		{"pull-fails.invalid/team/tools:1.0", true},
		{"alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true},
		{"", false},
		{"Not/A:Valid Image", false},
		{"Registry/lower", true}, // an upper-case first component is a registry host
		{"team/Upper", false},
		{"trailing:", false},
		{"double//slash", false},
	}
	for _, tc := range cases {
		if err := validateImageName(tc.name); (err == nil) != tc.valid {
			t.Errorf("validateImageName(%q) = %v, want valid=%v", tc.name, err, tc.valid)
		}
	}
}

func TestPullFailurePatterns(t *testing.T) {
	t.Parallel()
	m := newGlobMatcher(DefaultPullFailurePatterns)
	cases := map[string]bool{
		"pull-fails.invalid/a":           true,
		"pull-fails.invalid/a/b:1":       true,
		"pull-fails.invalid":             false,
		"example.com/pull-fails.invalid": false,
		"debian":                         false,
	}
	for name, want := range cases {
		if got := m.match(name); got != want {
			t.Errorf("match(%q) = %v, want %v", name, got, want)
		}
	}
}
