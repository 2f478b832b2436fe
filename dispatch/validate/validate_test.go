package validate

import (
	"errors"
	"strings"
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

func valid() api.OperationSpec {
	return api.OperationSpec{Name: "deploy web", Pool: "web", Script: "echo hi", Syntax: "bash",
		Files:     []api.File{{Path: "config/app.json", Content: []byte("{}"), Mode: 0o644}},
		Variables: []api.Variable{{Name: "DB_PASSWORD", Value: "x", Sensitive: true}},
		Image:     "ghcr.io/acme/tools:1.2", Requests: &api.Resources{CPU: "250m", Memory: "512Mi"},
		TimeoutSeconds: 600, Capabilities: []string{"kubernetes-job"}}
}

func TestOperationSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*api.OperationSpec)
		field  string // "" = valid
		code   string
	}{
		{"valid", func(*api.OperationSpec) {}, "", ""},
		{"digest image", func(s *api.OperationSpec) {
			s.Image = "alpine@sha256:" + strings.Repeat("a", 64)
		}, "", ""},
		{"no pool", func(s *api.OperationSpec) { s.Pool = "" }, "pool", ""},
		{"upper-case pool", func(s *api.OperationSpec) { s.Pool = "Web" }, "pool", ""},
		{"no script", func(s *api.OperationSpec) { s.Script = "  \n" }, "script", ""},
		{"unknown syntax", func(s *api.OperationSpec) { s.Syntax = "cmd" }, "syntax", ""},
		{"absolute file", func(s *api.OperationSpec) { s.Files[0].Path = "/etc/passwd" }, "files[0].path", ""},
		{"escaping file", func(s *api.OperationSpec) { s.Files[0].Path = "../x" }, "files[0].path", ""},
		{"unclean file", func(s *api.OperationSpec) { s.Files[0].Path = "a//b" }, "files[0].path", ""},
		{"duplicate file", func(s *api.OperationSpec) { s.Files = append(s.Files, s.Files[0]) }, "files[1].path", ""},
		{"file mode", func(s *api.OperationSpec) { s.Files[0].Mode = 0o4755 }, "files[0].mode", ""},
		{"variable name", func(s *api.OperationSpec) { s.Variables[0].Name = "1X" }, "variables[0].name", ""},
		{"duplicate variable", func(s *api.OperationSpec) {
			s.Variables = append(s.Variables, api.Variable{Name: "DB_PASSWORD"})
		}, "variables[1].name", ""},
		{"NUL in a value", func(s *api.OperationSpec) { s.Variables[0].Value = "a\x00b" }, "variables[0].value", ""},
		{"bad image", func(s *api.OperationSpec) { s.Image = "Not An Image!" }, "image", ""},
		{"upper-case repository", func(s *api.OperationSpec) { s.Image = "Alpine:3" }, "image", ""},
		{"bad cpu", func(s *api.OperationSpec) { s.Requests.CPU = "lots" }, "requests.cpu", ""},
		{"zero memory", func(s *api.OperationSpec) { s.Requests.Memory = "0" }, "requests.memory", ""},
		{"negative timeout", func(s *api.OperationSpec) { s.TimeoutSeconds = -1 }, "timeout_seconds", ""},
		{"capability", func(s *api.OperationSpec) { s.Capabilities = []string{"Docker Daemon"} }, "capabilities[0]", ""},
		{"too large, names the largest file", func(s *api.OperationSpec) {
			s.Files = append(s.Files, api.File{Path: "big.bin", Content: make([]byte, 800<<10)})
			s.Script = strings.Repeat("#", 200<<10)
		}, "files[1].content", api.CodeTooLarge},
		{"too large, names the script", func(s *api.OperationSpec) { s.Script = strings.Repeat("#", 901<<10) }, "script", api.CodeTooLarge},
		{"at the limit", func(s *api.OperationSpec) {
			s.Files, s.Variables = nil, nil
			s.Script = strings.Repeat("#", MaxOperationBytes)
		}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := valid()
			tt.mutate(&s)
			checkErr(t, OperationSpec("", &s, false), tt.field, tt.code)
		})
	}
}

func checkErr(t *testing.T, err error, field, code string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var ve *Error
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v, want a *validate.Error for %s", err, field)
	}
	if ve.Field != field || ve.Code != code || ve.Message == "" {
		t.Errorf("error = field %q code %q (%s), want field %q code %q", ve.Field, ve.Code, ve.Message, field, code)
	}
}

func TestDeploymentSpec(t *testing.T) {
	t.Parallel()
	step := func(pool string) api.OperationSpec { return api.OperationSpec{Pool: pool, Script: "echo"} }
	tests := []struct {
		name  string
		d     api.DeploymentSpec
		field string
	}{
		{"valid with default pool", api.DeploymentSpec{Name: "d", Pool: "web", Steps: []api.OperationSpec{step(""), step("db")}}, ""},
		{"no name", api.DeploymentSpec{Pool: "web", Steps: []api.OperationSpec{step("")}}, "name"},
		{"no steps", api.DeploymentSpec{Name: "d", Pool: "web"}, "steps"},
		{"step without any pool", api.DeploymentSpec{Name: "d", Steps: []api.OperationSpec{step("a"), step("")}}, "steps[1].pool"},
		{"bad step image", api.DeploymentSpec{Name: "d", Pool: "web", Steps: []api.OperationSpec{{Script: "x", Image: "::"}}}, "steps[0].image"},
		{"too many steps", api.DeploymentSpec{Name: "d", Pool: "web", Steps: make([]api.OperationSpec, MaxSteps+1)}, "steps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkErr(t, DeploymentSpec(&tt.d), tt.field, "")
		})
	}
}

func TestWorkerRequests(t *testing.T) {
	t.Parallel()
	zero, three := 0, 3
	line := func(seq int64, stream, text string) api.LogLine {
		return api.LogLine{Seq: seq, Stream: stream, Text: text}
	}
	many := make([]api.LogLine, MaxLogLines+1)
	for i := range many {
		many[i] = line(int64(i+1), "stdout", "x")
	}
	big := make([]api.LogLine, 70)
	for i := range big {
		big[i] = line(int64(i+1), "stdout", strings.Repeat("x", 60<<10))
	}
	tests := []struct {
		name  string
		err   error
		field string
		code  string
	}{
		{"register ok", Register(&api.RegisterRequest{Name: "w", Pools: []string{"p"}, Version: "1.0.0", Capacity: 4}), "", ""},
		{"register capacity", Register(&api.RegisterRequest{Name: "w", Version: "1", Capacity: 0}), "capacity", ""},
		{"register version", Register(&api.RegisterRequest{Name: "w", Version: "1 0", Capacity: 1}), "version", ""},
		{"register pools", Register(&api.RegisterRequest{Name: "w", Pools: []string{"p", "p"}, Version: "1", Capacity: 1}), "pools[1]", ""},
		{"lease wait", Lease(&api.LeaseRequest{WaitSeconds: 31}), "wait_seconds", ""},
		{"status state", Status(&api.StatusRequest{LeaseID: "l", State: api.StateSucceeded}), "state", ""},
		{"status lease", Status(&api.StatusRequest{State: api.StateRunning}), "lease_id", ""},
		{"logs ok", AppendLogs(&api.AppendLogsRequest{LeaseID: "l", Lines: []api.LogLine{line(1, "stdout", "a"), line(0, "system", "b")}}), "", ""},
		{"logs stream", AppendLogs(&api.AppendLogsRequest{LeaseID: "l", Lines: []api.LogLine{line(1, "out", "a")}}), "lines[0].stream", ""},
		{"logs seq", AppendLogs(&api.AppendLogsRequest{LeaseID: "l", Lines: []api.LogLine{line(1, "stdout", ""), line(-2, "stdout", "")}}), "lines[1].seq", ""},
		{"logs pos", AppendLogs(&api.AppendLogsRequest{LeaseID: "l", Lines: []api.LogLine{{Pos: 3, Seq: 1, Stream: "stdout"}}}), "lines[0].pos", ""},
		{"logs line too long", AppendLogs(&api.AppendLogsRequest{LeaseID: "l", Lines: []api.LogLine{line(1, "stdout", strings.Repeat("x", MaxLineBytes+1))}}), "lines[0].text", api.CodeTooLarge},
		{"logs too many", AppendLogs(&api.AppendLogsRequest{LeaseID: "l", Lines: many}), "lines", api.CodeTooLarge},
		{"logs batch too big", AppendLogs(&api.AppendLogsRequest{LeaseID: "l", Lines: big}), "lines", api.CodeTooLarge},
		{"result ok", Result(&api.ResultRequest{LeaseID: "l", State: api.StateSucceeded, ExitCode: &zero}), "", ""},
		{"result failed without code", Result(&api.ResultRequest{LeaseID: "l", State: api.StateFailed, Message: "image pull failed"}), "", ""},
		{"succeeded without code", Result(&api.ResultRequest{LeaseID: "l", State: api.StateSucceeded}), "exit_code", ""},
		{"succeeded with 3", Result(&api.ResultRequest{LeaseID: "l", State: api.StateSucceeded, ExitCode: &three}), "exit_code", ""},
		{"result lost", Result(&api.ResultRequest{LeaseID: "l", State: api.StateLost}), "state", ""},
		{"heartbeat ok", Heartbeat(&api.HeartbeatRequest{Version: "1", Capacity: 1, Running: []string{"op-1"}}), "", ""},
		{"heartbeat running", Heartbeat(&api.HeartbeatRequest{Version: "1", Running: []string{""}}), "running[0]", ""},
		{"heartbeat checks ok", Heartbeat(&api.HeartbeatRequest{Version: "1", Health: api.Health{Checks: []api.Check{
			{Name: api.CheckKubernetesAPI, OK: true}, {Name: api.CheckPermissions, Message: "cannot create jobs"}}}}), "", ""},
		{"heartbeat too many checks", Heartbeat(&api.HeartbeatRequest{Version: "1", Health: api.Health{Checks: make([]api.Check, api.MaxChecks+1)}}), "health.checks", ""},
		{"heartbeat check unnamed", Heartbeat(&api.HeartbeatRequest{Version: "1", Health: api.Health{Checks: []api.Check{{OK: true}}}}), "health.checks[0].name", ""},
		{"heartbeat check name control", Heartbeat(&api.HeartbeatRequest{Version: "1", Health: api.Health{Checks: []api.Check{{Name: "a\x1b[2Jb"}}}}), "health.checks[0].name", ""},
		{"heartbeat check name long", Heartbeat(&api.HeartbeatRequest{Version: "1", Health: api.Health{Checks: []api.Check{{Name: strings.Repeat("n", MaxNameLen+1)}}}}), "health.checks[0].name", ""},
		{"heartbeat check message long", Heartbeat(&api.HeartbeatRequest{Version: "1", Health: api.Health{Checks: []api.Check{
			{Name: "x", Message: strings.Repeat("m", MaxMessageLen+1)}}}}), "health.checks[0].message", ""},
		{"token pools", CreateToken(&api.CreateTokenRequest{}), "pools", ""},
		{"token ttl", CreateToken(&api.CreateTokenRequest{Pools: []string{"p"}, TTLSeconds: -5}), "ttl_seconds", ""},
		{"pool name", CreatePool(&api.CreatePoolRequest{Name: "-x"}), "name", ""},
		{"desired version", DesiredVersion(&api.DesiredVersion{Version: "2.0.0", ChartSHA256: "x"}), "chart_url", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkErr(t, tt.err, tt.field, tt.code)
		})
	}
}
