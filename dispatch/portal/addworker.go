package portal

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// workerForm is the "Add a Kubernetes worker" form: what `octo-worker install` takes as flags.
type workerForm struct {
	Pools     []string // chosen
	All       []api.Pool
	ServerURL string
	Namespace string
	Release   string
	Image     string // scriptPods.worker.image: the worker-tools image
	CPU       string // scriptPods.resources.requests.cpu
	Memory    string // scriptPods.resources.requests.memory

	Problems []string
}

// Value keys the form sets, passed to helm as --set-literal so that nothing typed into a field can set
// another key (a comma or a brace is just part of the value) and chartgen's checks see the value as typed.
const (
	keyImage  = "scriptPods.worker.image"
	keyCPU    = "scriptPods.resources.requests.cpu"
	keyMemory = "scriptPods.resources.requests.memory"
)

// installed is what the page shows once the token exists: the files and the command, as install writes them.
type installed struct {
	Token      api.RegistrationToken
	Command    string
	ValuesFile string // its name, as the command uses it
	Values     string // its content (holds the token)
	ChartFile  string // the chart archive's name, as the command uses it
	ChartURL   string
}

func (p *Portal) addWorkerPage(w http.ResponseWriter, r *http.Request) {
	f := workerForm{ServerURL: origin(r), Namespace: "octo-worker", Release: "octo-worker"}
	p.showWorkerForm(w, r, http.StatusOK, f)
}

func (p *Portal) showWorkerForm(w http.ResponseWriter, r *http.Request, status int, f workerForm) {
	pools, err := p.b.Pools(r.Context())
	if err != nil {
		p.fail(w, r, 0, "", err)
		return
	}
	f.All = pools
	p.render(w, r, status, "addworker", "Add a Kubernetes worker", f)
}

// command is the install command of the form with the registration token given.
func (f workerForm) command(token string) chartgen.InstallCommand {
	var set []string
	for _, kv := range [][2]string{{keyImage, f.Image}, {keyCPU, f.CPU}, {keyMemory, f.Memory}} {
		if kv[1] != "" {
			set = append(set, kv[0]+"="+kv[1])
		}
	}
	return chartgen.InstallCommand{Release: f.Release, Namespace: f.Namespace, ServerURL: f.ServerURL,
		RegistrationToken: token, Pools: f.Pools, User: chartgen.Input{SetLiteral: set}}
}

// addWorker validates the form as `install` validates its flags, then creates a registration token for the
// pools and shows the helm command with its values file.
func (p *Portal) addWorker(w http.ResponseWriter, r *http.Request) {
	pf := r.PostForm
	f := workerForm{Pools: pf["pool"], ServerURL: strings.TrimSpace(pf.Get("server_url")),
		Namespace: strings.TrimSpace(pf.Get("namespace")), Release: strings.TrimSpace(pf.Get("release")),
		Image: strings.TrimSpace(pf.Get("image")), CPU: strings.TrimSpace(pf.Get("cpu")), Memory: strings.TrimSpace(pf.Get("memory"))}
	if len(f.Pools) == 0 {
		f.Problems = append(f.Problems, "pools: choose at least one pool the worker takes operations from")
	}
	// The values are checked with a stand-in token first, so that a form with problems creates no token.
	if _, err := f.command("owr_" + randomToken()).Check(); err != nil {
		var pe *chartgen.ProblemsError
		if !errors.As(err, &pe) {
			p.fail(w, r, http.StatusInternalServerError, err.Error(), nil)
			return
		}
		for _, pr := range pe.Problems {
			f.Problems = append(f.Problems, problemText(pr))
		}
	}
	if len(f.Problems) > 0 {
		p.showWorkerForm(w, r, http.StatusUnprocessableEntity, f)
		return
	}
	tok, err := p.b.CreateToken(r.Context(), api.CreateTokenRequest{Pools: f.Pools})
	if err != nil {
		status, msg := p.b.Explain(r, err)
		f.Problems = append(f.Problems, msg)
		p.showWorkerForm(w, r, status, f)
		return
	}
	ch, err := p.chartArchive()
	if err != nil {
		p.fail(w, r, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	cmd := f.command(tok.Token)
	values, err := cmd.ValuesYAML()
	if err != nil {
		p.fail(w, r, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	p.log.WithField("token", tok.ID).WithField("pools", f.Pools).Info("portal: registration token created for a new worker")
	p.render(w, r, http.StatusCreated, "installed", "Add a Kubernetes worker", installed{
		Token: tok, Command: cmd.String(ch.version), ValuesFile: cmd.ValuesFile(), Values: string(values),
		ChartFile: cmd.ChartArchive(ch.version), ChartURL: "/chart/" + ch.name,
	})
}

// problemText is one of chartgen's problems in the form's words: the flag or value key, then the message.
func problemText(pr chartgen.Problem) string {
	where := pr.Path                                                              // a value's key
	if strings.HasPrefix(pr.File, "--") && !strings.HasPrefix(pr.File, "--set") { // a flag: its value is in Path
		where = strings.TrimPrefix(pr.File, "--")
	}
	if where == "" {
		return pr.Message
	}
	return where + ": " + pr.Message
}

// archive is the embedded chart packaged as `install` writes it.
type archive struct {
	name, version string
	data          []byte
}

var packaged = sync.OnceValues(func() (archive, error) {
	ch, err := chartgen.EmbeddedChart()
	if err != nil {
		return archive{}, err
	}
	dir, err := os.MkdirTemp("", "octo-portal-chart-")
	if err != nil {
		return archive{}, fmt.Errorf("packaging the chart: %w", err)
	}
	defer os.RemoveAll(dir)
	file, err := chartgen.Package(ch, "", "", dir)
	if err != nil {
		return archive{}, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return archive{}, fmt.Errorf("packaging the chart: %w", err)
	}
	return archive{name: path.Base(file), version: ch.Metadata.Version, data: data}, nil
})

func (p *Portal) chartArchive() (archive, error) { return packaged() }

// chart serves the chart archive the helm command names.
func (p *Portal) chart(w http.ResponseWriter, r *http.Request) {
	a, err := p.chartArchive()
	if err != nil {
		p.fail(w, r, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	if r.PathValue("file") != a.name {
		p.fail(w, r, http.StatusNotFound, fmt.Sprintf("no chart %s: this server has %s", r.PathValue("file"), a.name), nil)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", a.name))
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.data))
}
