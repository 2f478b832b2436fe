package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

func TestEsc(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, esc, text string }{
		{"plain ünïcödé ✓", "plain ünïcödé ✓", "plain ünïcödé ✓"},
		{"clear\x1b[2J", `clear\x1b[2J`, `clear\x1b[2J`},
		{"osc52\x1b]52;c;cm0gLXJm\x07", `osc52\x1b]52;c;cm0gLXJm\x07`, `osc52\x1b]52;c;cm0gLXJm\x07`},
		{"c1 \u009b2J", `c1 \u009b2J`, `c1 \u009b2J`},
		{"rows\nand\tcols\r", `rows\nand\tcols\r`, "rows\nand\tcols\\r"},
		{"del\x7f nul\x00 bad\xff", `del\x7f nul\x00 bad\xff`, `del\x7f nul\x00 bad\xff`},
		{"U+FFFD \ufffd stays", "U+FFFD \ufffd stays", "U+FFFD \ufffd stays"},
	}
	for _, tt := range tests {
		if got := esc(tt.in); got != tt.esc {
			t.Errorf("esc(%q) = %q, want %q", tt.in, got, tt.esc)
		}
		if got := escText(tt.in); got != tt.text {
			t.Errorf("escText(%q) = %q, want %q", tt.in, got, tt.text)
		}
	}
}

// hostile is text a server could hold: sequences that clear the screen, write the clipboard, retitle the
// window, and a newline that would forge a table row.
const hostile = "evil\x1b[2J\x1b]52;c;cm0gLXJmIC8=\x07\x1b]0;pwned\x07\u009b31m\nFAKE ROW"

func noControls(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || r >= 0x80 && r <= 0x9f {
			t.Fatalf("%s printed control character %U raw:\n%q", what, r, out)
		}
	}
	if strings.Contains(out, "\nFAKE ROW") {
		t.Fatalf("%s let a name forge a row:\n%s", what, out)
	}
	if !strings.Contains(out, `\x1b[2J`) {
		t.Fatalf("%s does not show the escaped text:\n%s", what, out)
	}
}

// TestTablesEscapeControlCharacters: every table the CLI prints from the server's objects escapes them.
func TestTablesEscapeControlCharacters(t *testing.T) {
	t.Parallel()
	code := 3
	op := api.Operation{ID: "op-1", WorkerID: hostile, OperationSpec: api.OperationSpec{Pool: "p", Name: hostile, Script: "echo hi\n\techo \x1b[2J \u009b",
		Variables: []api.Variable{{Name: "A", Value: hostile}}, Files: []api.File{{Path: hostile}}, Image: hostile},
		State: api.StateFailed, ExitCode: &code, Message: hostile}
	tables := map[string]func(w *bytes.Buffer){
		"ops table": func(w *bytes.Buffer) { opsTable(w, []api.Operation{op}) },
		"ops show":  func(w *bytes.Buffer) { showOperation(w, op) },
		"removal": func(w *bytes.Buffer) {
			printRemoval(w, api.WorkerRemoval{Worker: api.Worker{ID: "wkr-1", Name: hostile}, Lost: []string{hostile}})
		},
	}
	for name, table := range tables {
		var out bytes.Buffer
		tw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
		var raw bytes.Buffer
		table(&raw)
		_, _ = escapingWriter{tw}.Write(raw.Bytes())
		_ = tw.Flush()
		noControls(t, name, out.String())
	}
	if got := endText(&api.LogEnd{State: api.StateFailed, Message: hostile}); !strings.Contains(escText(got), `\x1b`) {
		t.Errorf("endText = %q", got)
	}
}

// TestWorkersListEscapesAServersText: `workers list` against a server that sends control characters in a
// worker's name and health message (an older server accepted them) prints them escaped.
func TestWorkersListEscapesAServersText(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/workers":
			_ = json.NewEncoder(w).Encode(api.WorkerList{Workers: []api.Worker{{ID: "wkr-1", Name: hostile, Pools: []string{"p"},
				Version: "1", Healthy: true, HealthMessage: hostile, Capabilities: []string{}}}})
		case "/api/v1/pools":
			_ = json.NewEncoder(w).Encode(api.PoolList{Pools: []api.Pool{{Name: "p", Description: hostile}}})
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(api.Error{Error: "no such thing " + hostile})
		}
	}))
	t.Cleanup(srv.Close)
	for _, args := range [][]string{{"workers", "list"}, {"pool", "list"}} {
		out, errOut, err := cliRun(t.Context(), append(args, "--server", srv.URL, "--token", "t")...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		noControls(t, strings.Join(args, " "), out)
	}
	_, _, err := cliRun(t.Context(), "ops", "show", "--server", srv.URL, "--token", "t", "op-1")
	if err == nil {
		t.Fatal("ops show of a missing operation succeeded")
	}
	// An error message keeps its lines (main prints it with escText): no terminal sequence gets through.
	noControls(t, "an error message", strings.ReplaceAll("octo-worker: "+escText(err.Error()), "\nFAKE ROW", " FAKE ROW"))
}
