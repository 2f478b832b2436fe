package mask

import "testing"

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
