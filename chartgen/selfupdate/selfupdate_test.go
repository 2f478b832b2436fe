package selfupdate

import (
	"strings"
	"testing"
	"unicode/utf8"

	"go.uber.org/goleak"
)

// No test may leave a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A pinned worker image tag would keep the old worker after the upgrade (and the worker would ask again):
// refused, naming the value and what to do. No tag, or the new appVersion, is fine.
func TestCheckTagNotPinned(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		vals    map[string]any
		wantErr string
	}{
		{"no image values", map[string]any{}, ""},
		{"repository only", map[string]any{"image": map[string]any{"repository": "r"}}, ""},
		{"empty tag", map[string]any{"image": map[string]any{"tag": ""}}, ""},
		{"tag is the new version", map[string]any{"image": map[string]any{"tag": "0.2.0"}}, ""},
		{"tag pinned to the old version", map[string]any{"image": map[string]any{"tag": "0.1.0"}}, `image.tag to "0.1.0"`},
		{"digest pinned", map[string]any{"image": map[string]any{"tag": "sha256:abc"}}, "remove image.tag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := checkTagNotPinned(c.vals, "0.2.0")
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
}

// Job names are stable per release and version, distinct across versions, and valid object names.
func TestJobName(t *testing.T) {
	t.Parallel()
	a, b := JobName("ow", "0.1.0"), JobName("ow", "0.2.0")
	if a != JobName("ow", "0.1.0") || a == b {
		t.Fatalf("JobName: %q %q", a, b)
	}
	long := JobName(strings.Repeat("r", 60)+"-", "1.0.0")
	if len(long) > 63 || strings.Contains(long, "--") {
		t.Fatalf("JobName of a long release: %q", long)
	}
}

// clip keeps short strings, and cuts long ones within the limit on a character boundary.
func TestClip(t *testing.T) {
	t.Parallel()
	if got := clip("short", 10); got != "short" {
		t.Fatalf("clip(short) = %q", got)
	}
	long := strings.Repeat("é", 100) // 200 bytes
	got := clip(long, 51)
	if len(got) > 51 || !strings.HasSuffix(got, " [...]") || !utf8.ValidString(got) {
		t.Fatalf("clip(long, 51) = %q (%d bytes)", got, len(got))
	}
}
