package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func testPools(t *testing.T, b *bundle) {
	b.pool(t, "a-pool")
	wantErr(t, b.s.CreatePool(b.ctx, api.Pool{Name: "p", CreatedAt: b.now}), store.ErrExists)
	got, err := b.s.Pool(b.ctx, "a-pool")
	if err != nil || got.Name != "a-pool" || !got.CreatedAt.Equal(b.now) {
		t.Fatalf("Pool = %+v, %v", got, err)
	}
	_, err = b.s.Pool(b.ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	pools, err := b.s.ListPools(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"a-pool", "p"}, names); diff != "" {
		t.Errorf("ListPools names (-want +got):\n%s", diff)
	}
}

func testTokens(t *testing.T, b *bundle) {
	tok := store.Token{ID: "tok-1", Hash: []byte("hash-1"), Pools: []string{"p"}, CreatedAt: b.now, ExpiresAt: b.now.Add(time.Hour)}
	if err := b.s.CreateToken(b.ctx, tok); err != nil {
		t.Fatal(err)
	}
	got, err := b.s.TokenByHash(b.ctx, []byte("hash-1"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tok, got); diff != "" {
		t.Errorf("TokenByHash (-want +got):\n%s", diff)
	}
	_, err = b.s.TokenByHash(b.ctx, []byte("other"))
	wantErr(t, err, store.ErrNotFound)
	revoked, err := b.s.RevokeToken(b.ctx, "tok-1", b.now.Add(time.Minute))
	if err != nil || revoked.RevokedAt == nil || !revoked.RevokedAt.Equal(b.now.Add(time.Minute)) {
		t.Fatalf("RevokeToken = %+v, %v", revoked, err)
	}
	again, err := b.s.RevokeToken(b.ctx, "tok-1", b.now.Add(time.Hour))
	if err != nil || !again.RevokedAt.Equal(b.now.Add(time.Minute)) {
		t.Errorf("second revoke moved the time: %+v, %v", again, err)
	}
	_, err = b.s.RevokeToken(b.ctx, "tok-x", b.now)
	wantErr(t, err, store.ErrNotFound)
	list, err := b.s.ListTokens(b.ctx)
	if err != nil || len(list) != 1 || list[0].RevokedAt == nil {
		t.Errorf("ListTokens = %+v, %v", list, err)
	}
}
