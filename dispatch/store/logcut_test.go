package store

import "testing"

func TestCutMarker(t *testing.T) {
	got := CutMarker(1234567, 103_000_000, 100<<20)
	want := "… 1,234,567 lines (98.2 MiB) dropped here: this log passed its 100 MiB limit (scriptPods.logLimit), " +
		"so the server keeps its first part and its last part …"
	if got != want {
		t.Errorf("CutMarker = %q, want %q", got, want)
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 10 << 30: "10 GiB"} {
		if got := IEC(n); got != want {
			t.Errorf("IEC(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 123456: "123,456"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
