package portal

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

func (p *Portal) poolsPage(w http.ResponseWriter, r *http.Request) {
	pools, err := p.b.Pools(r.Context())
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	workers, err := p.b.Workers(r.Context())
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	type row struct {
		api.Pool
		Workers, Healthy, Running, Capacity int
	}
	rows := make([]row, 0, len(pools))
	for _, pl := range pools {
		rw := row{Pool: pl}
		for _, wk := range workers {
			if slices.Contains(wk.Pools, pl.Name) {
				rw.Workers++
				rw.Running += wk.Running
				rw.Capacity += wk.Capacity
				if wk.State == api.WorkerHealthy {
					rw.Healthy++
				}
			}
		}
		rows = append(rows, rw)
	}
	p.render(w, r, http.StatusOK, "pools", "Pools", rows)
}

func (p *Portal) workersPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	workers, err := p.b.Workers(ctx)
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	// The operations each worker holds: those leased and running (a worker holds at most its capacity).
	held := map[string][]api.Operation{}
	for _, st := range []api.State{api.StateLeased, api.StateRunning} {
		ops, err := p.b.Operations(ctx, Filter{State: st, Limit: MaxLimit})
		if err != nil {
			p.fail(w, r, 0, "", err)
			return
		}
		for _, op := range ops {
			held[op.WorkerID] = append(held[op.WorkerID], op)
		}
	}
	type row struct {
		api.Worker
		Operations []api.Operation
	}
	rows := make([]row, 0, len(workers))
	for _, wk := range workers {
		rows = append(rows, row{Worker: wk, Operations: held[wk.ID]})
	}
	p.render(w, r, http.StatusOK, "workers", "Workers", rows)
}

// limitOf reads ?limit= (DefaultLimit when absent), bounded to MaxLimit.
func limitOf(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || n < 1 {
		return DefaultLimit
	}
	return min(n, MaxLimit)
}

var states = []api.State{api.StateQueued, api.StateLeased, api.StateRunning, api.StateSucceeded, api.StateFailed,
	api.StateCancelled, api.StateTimedOut, api.StateLost}

func (p *Portal) operationsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{State: api.State(q.Get("state")), Pool: q.Get("pool"), WorkerID: q.Get("worker"), Limit: limitOf(r)}
	if f.State != "" && !slices.Contains(states, f.State) {
		f.State = ""
	}
	ops, err := p.b.Operations(r.Context(), f)
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	p.render(w, r, http.StatusOK, "operations", "Operations", struct {
		Filter     Filter
		States     []api.State
		Operations []api.Operation
		More       bool // the page shows the limit: there may be older ones
		Limits     []int
	}{f, states, ops, len(ops) == f.Limit, []int{DefaultLimit, 500, MaxLimit}})
}

func (p *Portal) operationPage(w http.ResponseWriter, r *http.Request) {
	op, err := p.b.Operation(r.Context(), r.PathValue("id"))
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	p.render(w, r, http.StatusOK, "operation", "Operation "+op.ID, op)
}

// logs serves the operation's log stream to the page's script.
func (p *Portal) logs(w http.ResponseWriter, r *http.Request) {
	p.b.FollowLogs(w, r, r.PathValue("id"))
}

func (p *Portal) cancelOperation(w http.ResponseWriter, r *http.Request) {
	op, err := p.b.CancelOperation(r.Context(), r.PathValue("id"))
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	http.Redirect(w, r, "/operations/"+url.PathEscape(op.ID), http.StatusSeeOther)
}

func (p *Portal) deploymentsPage(w http.ResponseWriter, r *http.Request) {
	limit := limitOf(r)
	deps, err := p.b.Deployments(r.Context(), limit)
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	p.render(w, r, http.StatusOK, "deployments", "Deployments", struct {
		Deployments []api.Deployment
		More        bool
	}{deps, len(deps) == limit})
}

func (p *Portal) deploymentPage(w http.ResponseWriter, r *http.Request) {
	d, err := p.b.Deployment(r.Context(), r.PathValue("id"))
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	p.render(w, r, http.StatusOK, "deployment", "Deployment "+d.Name, d)
}

func (p *Portal) cancelDeployment(w http.ResponseWriter, r *http.Request) {
	d, err := p.b.CancelDeployment(r.Context(), r.PathValue("id"))
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	http.Redirect(w, r, "/deployments/"+url.PathEscape(d.ID), http.StatusSeeOther)
}
