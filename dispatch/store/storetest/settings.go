package storetest

import (
	"bytes"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func testSettingsAndCharts(t *testing.T, b *bundle) {
	_, err := b.s.Setting(b.ctx, "desired_version")
	wantErr(t, err, store.ErrNotFound)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if err := b.s.SetSetting(b.ctx, "desired_version", v); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := b.s.Setting(b.ctx, "desired_version"); err != nil || v != "1.1.0" {
		t.Errorf("Setting = %q, %v", v, err)
	}
	data := bytes.Repeat([]byte{0x1f, 0x8b, 0}, 1000)
	c := api.Chart{Version: "1.1.0", SHA256: "abc", Size: int64(len(data)), UploadedAt: b.now}
	if err := b.s.PutChart(b.ctx, c, data); err != nil {
		t.Fatal(err)
	}
	got, gotData, err := b.s.Chart(b.ctx, "1.1.0")
	if err != nil || !bytes.Equal(gotData, data) || got != c {
		t.Errorf("Chart = %+v (%d bytes), %v", got, len(gotData), err)
	}
	_, _, err = b.s.Chart(b.ctx, "9.9.9")
	wantErr(t, err, store.ErrNotFound)
}
