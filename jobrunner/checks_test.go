package jobrunner

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// The health a heartbeat carries: every check of the last round, OK only when all pass, and a message that
// names the failing checks first, then the self-update's notes (which never make the worker unhealthy).
func TestHealthOf(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	pass := func(name string) api.Check { return api.Check{Name: name, OK: true} }
	fail := func(name, msg string) api.Check { return api.Check{Name: name, Message: msg} }
	allPass := []api.Check{pass(api.CheckKubernetesAPI), pass(api.CheckInformers), pass(api.CheckPermissions), pass(api.CheckScriptPodAdmission)}
	cases := []struct {
		name   string
		checks []api.Check
		notes  []string
		want   api.Health
	}{
		{"all pass", allPass, nil, api.Health{OK: true, Checks: allPass, CheckedAt: at}},
		{"all pass, a self-update note", allPass, []string{"draining for a self-update to 0.2.0", ""},
			api.Health{OK: true, Message: "draining for a self-update to 0.2.0", Checks: allPass, CheckedAt: at}},
		{"no round yet", nil, []string{"draining"}, api.Health{Message: "health checks have not run yet; draining", CheckedAt: at}},
		{"two fail, with notes",
			[]api.Check{pass(api.CheckKubernetesAPI), fail(api.CheckPermissions, "may not create jobs.batch"), fail(api.CheckScriptPodAdmission, "exceeded quota: q")},
			[]string{"", "helm refused the last upgrade"},
			api.Health{Message: "permissions: may not create jobs.batch; script-pod-admission: exceeded quota: q; helm refused the last upgrade",
				Checks:    []api.Check{pass(api.CheckKubernetesAPI), fail(api.CheckPermissions, "may not create jobs.batch"), fail(api.CheckScriptPodAdmission, "exceeded quota: q")},
				CheckedAt: at}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(c.want, healthOf(c.checks, at, c.notes...)); diff != "" {
				t.Fatalf("healthOf (-want +got):\n%s", diff)
			}
		})
	}
	long := healthOf([]api.Check{fail(api.CheckPermissions, strings.Repeat("x", api.MaxMessageLen))}, at, strings.Repeat("y", 100))
	if len(long.Message) > api.MaxMessageLen || long.OK {
		t.Fatalf("a long message: %d bytes, OK %v; want it capped to %d and not OK", len(long.Message), long.OK, api.MaxMessageLen)
	}
}

func TestInformersProblem(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		unsynced []string
		failures map[string]watchFailure
		want     string
	}{
		{"synced, no failure", nil, nil, ""},
		{"a failure older than the window", nil, map[string]watchFailure{"jobs": {now.Add(-3 * time.Minute), "forbidden"}}, ""},
		{"not synced", []string{"jobs", "pods"}, nil, "not synced: jobs, pods"},
		{"recent failures, sorted", nil, map[string]watchFailure{
			"pods": {now.Add(-10 * time.Second), `pods is forbidden: cannot watch`},
			"jobs": {now.Add(-time.Minute), "connection refused"},
		}, "the jobs informer failed to list or watch 1m0s ago: connection refused; the pods informer failed to list or watch 10s ago: pods is forbidden: cannot watch"},
		{"both", []string{"events"}, map[string]watchFailure{"events": {now, "timeout"}},
			"not synced: events; the events informer failed to list or watch 0s ago: timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := informersProblem(c.unsynced, c.failures, now, 2*time.Minute); got != c.want {
				t.Fatalf("informersProblem = %q, want %q", got, c.want)
			}
		})
	}
}

// An expired resource version and a closed watch are how watches normally end; anything else is trouble.
func TestWatchTrouble(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want bool
	}{
		{io.EOF, false},
		{io.ErrUnexpectedEOF, false},
		{apierrors.NewResourceExpired("too old resource version"), false},
		{apierrors.NewGone("gone"), false},
		{apierrors.NewForbidden(schema.GroupResource{Group: "batch", Resource: "jobs"}, "", errors.New("no")), true},
		{fmt.Errorf("listing: %w", errors.New("connection refused")), true},
	}
	for _, c := range cases {
		if got := watchTrouble(c.err); got != c.want {
			t.Errorf("watchTrouble(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestPermissionsProblem(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		denied []permission
		errs   []string
		want   string
	}{
		{"all allowed", nil, nil, ""},
		{"denied", []permission{{"create", "batch", "jobs"}, {"get", "", "pods/log"}}, nil,
			"may not create jobs.batch, get pods/log in namespace ns: grant them in the worker's Role (the chart's Role does)"},
		{"could not ask", nil, []string{"cannot ask whether it may list pods: timeout"}, "cannot ask whether it may list pods: timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := permissionsProblem("ns", c.denied, c.errs); got != c.want {
				t.Fatalf("permissionsProblem = %q, want %q", got, c.want)
			}
		})
	}
}

// The chart's Role grants everything the permissions check asks for, so a fresh install is healthy.
func TestChartRoleGrantsAgentPermissions(t *testing.T) {
	t.Parallel()
	l, err := chartgen.LoadAndValidate(nil, []string{"worker.serverUrl=https://d.example.com", "worker.pools={p}", "worker.registrationToken=t"})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := chartgen.EmbeddedChart()
	if err != nil {
		t.Fatal(err)
	}
	r, err := chartgen.Render(t.Context(), ch, chartgen.RenderOptions{Release: "ow", Namespace: "ns"}, l.User)
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.Role
	for _, doc := range strings.Split(r.Manifest, "\n---\n") {
		var obj rbacv1.Role
		if err := yaml.Unmarshal([]byte(doc), &obj); err == nil && obj.Kind == "Role" && obj.Name == "ow-octo-worker" {
			role = &obj
		}
	}
	if role == nil {
		t.Fatalf("no Role ow-octo-worker in the rendered chart:\n%s", r.Manifest)
	}
	for _, p := range agentPermissions {
		granted := slices.ContainsFunc(role.Rules, func(rule rbacv1.PolicyRule) bool {
			return slices.Contains(rule.APIGroups, p.group) && slices.Contains(rule.Resources, p.resource) && slices.Contains(rule.Verbs, p.verb)
		})
		if !granted {
			t.Errorf("the chart's Role does not grant %s", p)
		}
	}
}

func TestUnready(t *testing.T) {
	t.Parallel()
	healthy := api.Health{OK: true}
	sick := api.Health{Message: "permissions: may not create jobs.batch"}
	cases := []struct {
		name     string
		starting bool
		health   api.Health
		answered bool
		beatErr  string
		want     string
	}{
		{"ready", false, healthy, true, "", ""},
		{"starting", true, healthy, false, "", "not ready: starting: syncing informers or re-adopting Jobs; no heartbeat answered yet"},
		{"a check fails", false, sick, true, "", "not ready: unhealthy: permissions: may not create jobs.batch"},
		{"the dispatch server does not answer", false, healthy, false, "connection refused",
			"not ready: the dispatch server did not answer the last heartbeat: connection refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := unready(c.starting, c.health, c.answered, c.beatErr)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != c.want {
				t.Fatalf("unready = %q, want %q", got, c.want)
			}
		})
	}
}

// The liveness probe fails only when the heartbeat loop has started and made no progress for three intervals
// plus the longest a heartbeat may take.
func TestBeatsStuck(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	limit := 3*time.Second + slowBeat
	cases := []struct {
		name  string
		setup func(b *beats)
		at    time.Time
		stuck bool
	}{
		{"not started", func(*beats) {}, t0.Add(time.Hour), false},
		{"began recently", func(b *beats) { b.begin(t0) }, t0.Add(limit), false},
		{"ended recently", func(b *beats) { b.begin(t0); b.end(t0.Add(time.Minute), errors.New("refused")) }, t0.Add(time.Minute + limit), false},
		{"no progress", func(b *beats) { b.begin(t0) }, t0.Add(limit + time.Second), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := &beats{interval: time.Second}
			c.setup(b)
			if err := b.stuck(c.at); (err != nil) != c.stuck {
				t.Fatalf("stuck = %v, want stuck %v", err, c.stuck)
			}
		})
	}
}
