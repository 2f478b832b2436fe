package portal

import (
	"net/http"
	"strings"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// adviceView is the requests advice page: the form, and the advice once a pool is chosen.
type adviceView struct {
	Pools                  []api.Pool
	Pool, Step             string
	Release, Namespace     string
	Advice                 *api.RequestsAdvice
	Command                string   // the helm command applying pool-wide advice
	AboveMax               []string // advised requests above the chart's default maxRequests
	MinSamples, MaxSamples int
	Error                  string
}

// advicePage shows what `octo-worker requests advise` prints, from the same route.
func (p *Portal) advicePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v := adviceView{Pool: q.Get("pool"), Step: strings.TrimSpace(q.Get("step")), Release: q.Get("release"), Namespace: q.Get("namespace"),
		MinSamples: api.MinAdviceSamples, MaxSamples: api.MaxAdviceSamples}
	if v.Release == "" {
		v.Release = "octo-worker"
	}
	if v.Namespace == "" {
		v.Namespace = "octo-worker"
	}
	pools, err := p.b.Pools(r.Context())
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	v.Pools = pools
	status := http.StatusOK
	if v.Pool != "" {
		a, err := p.b.RequestsAdvice(r.Context(), v.Pool, v.Step)
		switch {
		case err != nil:
			status, v.Error = p.b.Explain(r, err)
		case a.Requests != (api.Resources{}) && a.Step == "":
			ch, err := p.chartArchive()
			if err != nil {
				p.fail(w, r, http.StatusInternalServerError, err.Error(), nil)
				return
			}
			v.Command = chartgen.RequestsUpgrade(v.Release, v.Namespace, chartgen.InstallCommand{}.ChartArchive(ch.version), a.Requests.CPU, a.Requests.Memory)
			v.AboveMax = chartgen.AboveDefaultMax(a.Requests.CPU, a.Requests.Memory)
			v.Advice = &a
		default:
			v.Advice = &a
		}
	}
	p.render(w, r, status, "advice", "Requests advice", v)
}
