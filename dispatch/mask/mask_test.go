package mask

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

func TestMask(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values []string
		in     string
		want   string
	}{
		{"no values", nil, "password=hunter2", "password=hunter2"},
		{"empty and blank values are ignored", []string{"", "  "}, "a  b", "a  b"},
		{"one value", []string{"hunter2"}, "password=hunter2", "password=********"},
		{"every occurrence", []string{"s3"}, "s3 and s3s3", "******** and ****************"},
		{"longest first", []string{"abc", "abcdef"}, "x abcdef y abc", "x ******** y ********"},
		{"multi-line value masked line by line", []string{"line-one\nline-two"}, "got line-two here", "got ******** here"},
		{"crlf value", []string{"first\r\nsecond"}, "first|second", "********|********"},
		{"unicode", []string{"pässwörd"}, "pw: pässwörd!", "pw: ********!"},
		{"overlapping values", []string{"aaa", "aab"}, "aaab", "********b"},
		{"few values, only the last in the line", []string{"one1", "two2", "three3"}, "x three3 y", "x ******** y"},
		{"few values, none in the line", []string{"one1", "two2", "three3"}, "x one y", "x one y"},
		{"many values (no pre-check), the last in the line", []string{"v01", "v02", "v03", "v04", "v05", "v06", "v07", "v08", "v09", "v10"}, "a v10 b", "a ******** b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := New(tt.values).Mask(tt.in); got != tt.want {
				t.Errorf("Mask(%q) with %q = %q, want %q", tt.in, tt.values, got, tt.want)
			}
		})
	}
}

func TestNilMasker(t *testing.T) {
	t.Parallel()
	var m *Masker
	if got := m.Mask("x"); got != "x" || !m.Empty() {
		t.Errorf("nil masker changed text: %q", got)
	}
	if New([]string{"v"}).Empty() {
		t.Error("masker with a value reports empty")
	}
}

// BenchmarkMask: masking log lines with n sensitive values, lines that hold none ("clean", nearly every line
// of a deployment log) and lines that hold one ("secret"), beside the bare strings.Replacer on the same lines
// (what Mask ran on every line before the pre-check), alternated batch by batch: ns/line, allocs/line, and
// mask/replacer (time).
func BenchmarkMask(b *testing.B) {
	for _, n := range []int{1, 3, 8, 20} {
		values := make([]string, n)
		for i := range values {
			values[i] = fmt.Sprintf("%x", sha256.Sum256([]byte{byte(i)}))[:20] // a token-like secret
		}
		m := New(values)
		for _, kind := range []string{"clean", "secret"} {
			lines := make([]string, 1000)
			for i := range lines {
				lines[i] = fmt.Sprintf("2026-11-27T10:31:06Z step %d: deploying release web-%d to namespace prod (helm upgrade --install)", i, i)
				if kind == "secret" {
					lines[i] += " with password " + values[i%n]
				}
			}
			b.Run(fmt.Sprintf("values=%d/%s", n, kind), func(b *testing.B) {
				var masked, bare time.Duration
				for b.Loop() {
					start := time.Now()
					for _, l := range lines {
						sink = m.Mask(l)
					}
					masked += time.Since(start)
					start = time.Now()
					for _, l := range lines {
						sink = m.r.Replace(l)
					}
					bare += time.Since(start)
				}
				per := float64(b.N * len(lines))
				b.ReportMetric(float64(masked.Nanoseconds())/per, "ns/line")
				b.ReportMetric(float64(bare.Nanoseconds())/per, "replacer-ns/line")
				b.ReportMetric(float64(masked)/float64(bare), "mask/replacer")
				b.ReportMetric(testing.AllocsPerRun(100, func() { sink = m.Mask(lines[7]) }), "allocs/line")
				b.ReportMetric(testing.AllocsPerRun(100, func() { sink = m.r.Replace(lines[7]) }), "replacer-allocs/line")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

var sink string
