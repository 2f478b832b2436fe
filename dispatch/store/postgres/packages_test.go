package postgres

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/store"
)

// TestDeletePackagesRacesSubmits: while one server deletes unused packages again and again, two others each
// store a package and submit an operation that references it. Each submit either stores its operation, and then its package stays, or is refused with
// ErrInvalid ("no longer stored"), and then the package is gone; the delete itself never fails, and names
// the content of exactly the packages it deleted.
func TestDeletePackagesRacesSubmits(t *testing.T) {
	t.Parallel()
	servers := servers(t, 3, 0)
	const n = 200
	pkgs := make([]api.Package, n)
	submitted := make([]error, n)
	var unused []string
	var deleteErr error
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 2 {
				p, err := servers[1+w].CreatePackage(t.Context(), api.Package{Name: fmt.Sprintf("pkg-%03d", i), Version: "1",
					SHA256: fmt.Sprintf("%064x", i), Size: 1, FileName: "f", CreatedAt: now})
				if err != nil {
					submitted[i] = err
					continue
				}
				pkgs[i] = p
				_, submitted[i] = servers[1+w].CreateOperation(t.Context(), store.NewOperation{ID: fmt.Sprintf("op-%03d", i),
					Spec: api.OperationSpec{Pool: "p", Script: "ls", Packages: []string{p.Name + "@1"}}, CreatedAt: now, Packages: []api.Package{p}})
			}
		}()
	}
	done := make(chan struct{})
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		for last := false; !last; {
			select {
			case <-done:
				last = true // one more run after the submits
			default:
			}
			gone, err := servers[0].DeletePackages(t.Context(), now.Add(time.Hour))
			if err != nil {
				deleteErr = err
				return
			}
			unused = append(unused, gone...)
		}
	}()
	wg.Wait()
	close(done)
	<-ran
	if deleteErr != nil {
		t.Fatalf("DeletePackages while operations were submitted: %v", deleteErr)
	}
	refused := 0
	for _, err := range submitted {
		if err != nil {
			refused++
		}
	}
	t.Logf("%d of %d submits refused (their package deleted first), %d stored", refused, n, n-refused)
	deleted := map[string]bool{}
	for _, sha := range unused {
		deleted[sha] = true
	}
	for i, p := range pkgs {
		_, err := servers[0].Package(t.Context(), api.PackageRef{Name: p.Name, Version: "1"})
		kept := err == nil
		switch {
		case submitted[i] == nil && !kept:
			t.Errorf("operation op-%02d was stored but its package %s was deleted", i, p.Name)
		case submitted[i] != nil && (!errors.Is(submitted[i], store.ErrInvalid) || !strings.Contains(submitted[i].Error(), "no longer stored")):
			t.Errorf("submit %d: %v; want it stored or refused as no longer stored", i, submitted[i])
		case submitted[i] != nil && kept:
			t.Errorf("submit %d was refused but package %s is kept", i, p.Name)
		}
		if deleted[p.SHA256] == kept {
			t.Errorf("package %s: kept %v, but DeletePackages named its content unused: %v", p.Name, kept, deleted[p.SHA256])
		}
	}
}
