package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

func sha(c byte) string { return strings.Repeat(string(c), 64) }

func (b *bundle) pkg(t *testing.T, name, version string, c byte) api.Package {
	t.Helper()
	p, err := b.s.CreatePackage(b.ctx, api.Package{Name: name, Version: version, SHA256: sha(c), Size: 42, FileName: name + ".tgz", CreatedAt: b.now})
	if err != nil {
		t.Fatalf("CreatePackage(%s@%s): %v", name, version, err)
	}
	return p
}

// testPackages: packages are stored, resolved by version and by content, listed, and a name and version name
// one content.
func testPackages(t *testing.T, b *bundle) {
	web1 := b.pkg(t, "web", "1.0", 'a')
	b.now = b.now.Add(time.Minute)
	web2 := b.pkg(t, "web", "2.0", 'b')
	same := b.pkg(t, "web", "2.1", 'b') // the same content under another version
	tool := b.pkg(t, "tool", "1.0", 'a')

	if again := b.pkg(t, "web", "1.0", 'a'); again != web1 {
		t.Errorf("CreatePackage again = %+v, want the stored %+v", again, web1)
	}
	_, err := b.s.CreatePackage(b.ctx, api.Package{Name: "web", Version: "1.0", SHA256: sha('c'), Size: 1, FileName: "x", CreatedAt: b.now})
	wantErr(t, err, store.ErrExists)

	for _, c := range []struct {
		ref  api.PackageRef
		want api.Package
	}{
		{api.PackageRef{Name: "web", Version: "1.0"}, web1},
		{api.PackageRef{Name: "web", Version: "2.1"}, same},
		{api.PackageRef{Name: "web", SHA256: sha('b')}, web2}, // the oldest of that content
		{api.PackageRef{Name: "tool", SHA256: sha('a')}, tool},
	} {
		got, err := b.s.Package(b.ctx, c.ref)
		if err != nil || got != c.want {
			t.Errorf("Package(%s) = %+v, %v; want %+v", c.ref, got, err, c.want)
		}
	}
	for _, ref := range []api.PackageRef{{Name: "web", Version: "3.0"}, {Name: "web", SHA256: sha('c')}, {Name: "tool", Version: "2.0"}} {
		_, err := b.s.Package(b.ctx, ref)
		wantErr(t, err, store.ErrNotFound)
	}
	list, err := b.s.ListPackages(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range list {
		got = append(got, p.Name+"@"+p.Version)
	}
	if want := "tool@1.0 web@2.0 web@2.1 web@1.0"; strings.Join(got, " ") != want {
		t.Errorf("ListPackages = %v, want %s", got, want)
	}
}

// testOperationPackages: an operation keeps the packages it was enqueued with (in a lease too), and an
// operation cannot reference a package the store does not hold.
func testOperationPackages(t *testing.T, b *bundle) {
	web := b.pkg(t, "web", "1.0", 'a')
	tool := b.pkg(t, "tool", "1.0", 'b')
	spec := api.OperationSpec{Pool: "p", Script: "ls", Packages: []string{"web@1.0", tool.Ref()}}
	op, err := b.s.CreateOperation(b.ctx, store.NewOperation{ID: b.id("op"), Spec: spec, CreatedAt: b.now, Packages: []api.Package{web, tool}})
	if err != nil {
		t.Fatal(err)
	}
	if len(op.ResolvedPackages) != 2 || op.ResolvedPackages[1] != tool {
		t.Errorf("CreateOperation = %+v, want both packages", op.ResolvedPackages)
	}
	got := b.get(t, op.ID)
	if len(got.Packages) != 2 || got.Packages[0] != "web@1.0" || len(got.ResolvedPackages) != 2 || got.ResolvedPackages[0] != web {
		t.Errorf("Operation = %v %+v, want the references and both packages", got.Packages, got.ResolvedPackages)
	}
	l := b.mustClaim(t, "w")
	if len(l.Operation.ResolvedPackages) != 2 || l.Operation.ResolvedPackages[0] != web {
		t.Errorf("the lease carries %+v, want both packages", l.Operation.ResolvedPackages)
	}

	// Handed to a waiting worker, the same.
	handed, err := b.s.CreateLeasedOperation(b.ctx, store.NewOperation{ID: b.id("op"), Spec: spec, CreatedAt: b.now,
		Packages: []api.Package{web, tool}}, b.params("w", time.Time{}))
	if err != nil || handed == nil {
		t.Fatalf("CreateLeasedOperation with packages = %+v, %v", handed, err)
	}
	if got := b.get(t, handed.Operation.ID); len(handed.Operation.ResolvedPackages) != 2 || len(got.ResolvedPackages) != 2 ||
		got.ResolvedPackages[1] != tool {
		t.Errorf("handed off with %+v, stored with %+v; want both packages", handed.Operation.ResolvedPackages, got.ResolvedPackages)
	}

	ghost := api.Package{Name: "ghost", Version: "1", SHA256: sha('c'), Size: 1, FileName: "ghost", CreatedAt: b.now}
	ghostOp := store.NewOperation{ID: b.id("op"), Spec: api.OperationSpec{Pool: "p", Script: "ls", Packages: []string{"ghost@1"}},
		CreatedAt: b.now, Packages: []api.Package{ghost}}
	_, err = b.s.CreateLeasedOperation(b.ctx, ghostOp, b.params("w", time.Time{}))
	wantErr(t, err, store.ErrInvalid)
	if _, err := b.s.Operation(b.ctx, ghostOp.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a hand-off refused for its package was stored: %v", err)
	}
	_, err = b.s.CreateOperation(b.ctx, store.NewOperation{ID: b.id("op"), Spec: api.OperationSpec{Pool: "p", Script: "ls", Packages: []string{"ghost@1"}},
		CreatedAt: b.now, Packages: []api.Package{ghost}})
	if err == nil {
		t.Fatal("CreateOperation with a package the store does not hold succeeded")
	}
	d := store.NewDeployment{ID: b.id("dep"), Name: "d", CreatedAt: b.now, Steps: []store.NewOperation{
		{ID: b.id("op"), Spec: api.OperationSpec{Pool: "p", Script: "ls"}, CreatedAt: b.now},
		{ID: b.id("op"), Spec: api.OperationSpec{Pool: "p", Script: "ls", Packages: []string{"ghost@1"}}, CreatedAt: b.now, Packages: []api.Package{ghost}},
	}}
	if _, err := b.s.CreateDeployment(b.ctx, d); err == nil {
		t.Fatal("CreateDeployment with a package the store does not hold succeeded")
	}
	if _, err := b.s.Deployment(b.ctx, d.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused deployment was stored: %v", err)
	}
}

// testPackageRetention: DeletePackages deletes the packages created before the cutoff that no operation
// references, and says which content no package holds any more.
func testPackageRetention(t *testing.T, b *bundle) {
	start := b.now
	cutoff := start.Add(time.Hour)
	unused := b.pkg(t, "unused", "1", 'a')
	b.pkg(t, "shared", "1", 'b')
	b.pkg(t, "shared", "2", 'b') // same content as shared@1; shared@2 is used
	used := b.pkg(t, "used", "1", 'c')
	b.now = cutoff
	fresh := b.pkg(t, "fresh", "1", 'd') // created at the cutoff: kept

	sharedUsed, _ := b.s.Package(b.ctx, api.PackageRef{Name: "shared", Version: "2"})
	op, err := b.s.CreateOperation(b.ctx, store.NewOperation{ID: b.id("op"), Spec: api.OperationSpec{Pool: "p", Script: "ls", Packages: []string{"used@1", "shared@2"}},
		CreatedAt: b.now, Packages: []api.Package{used, sharedUsed}})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := b.s.DeletePackages(b.ctx, cutoff)
	if err != nil {
		t.Fatalf("DeletePackages: %v", err)
	}
	if strings.Join(gone, " ") != unused.SHA256 {
		t.Errorf("DeletePackages says %v is unused, want only %s (shared@2 still holds %s)", gone, unused.SHA256, sha('b'))
	}
	list, _ := b.s.ListPackages(b.ctx)
	var names []string
	for _, p := range list {
		names = append(names, p.Name+"@"+p.Version)
	}
	if want := "fresh@1 shared@2 used@1"; strings.Join(names, " ") != want {
		t.Errorf("after DeletePackages: %v, want %s", names, want)
	}

	// Once the operation that used them is deleted, they go too.
	if _, _, err := b.s.Cancel(b.ctx, op.ID, b.now); err != nil {
		t.Fatal(err)
	}
	if _, err := b.s.DeleteFinished(b.ctx, b.now.Add(time.Second), 100); err != nil {
		t.Fatal(err)
	}
	gone, err = b.s.DeletePackages(b.ctx, cutoff)
	if err != nil || strings.Join(sorted(gone...), " ") != strings.Join(sorted(sha('b'), sha('c')), " ") {
		t.Errorf("DeletePackages after the operation went = %v, %v; want the content of shared and used", gone, err)
	}
	if _, err := b.s.Package(b.ctx, api.PackageRef{Name: fresh.Name, Version: fresh.Version}); err != nil {
		t.Errorf("the package created at the cutoff: %v, want it kept", err)
	}
}
