package validate

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/distribution/reference"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// OperationSpec checks one operation (prefix is its path in the request, "" or "steps[2]"). An empty pool
// is accepted when poolOptional is set (a deployment step inherits the deployment's pool).
func OperationSpec(prefix string, s *api.OperationSpec, poolOptional bool) error {
	if err := name(join(prefix, "name"), s.Name, MaxNameLen); err != nil {
		return err
	}
	if s.Pool != "" || !poolOptional {
		if err := PoolName(join(prefix, "pool"), s.Pool); err != nil {
			return err
		}
	}
	if strings.TrimSpace(s.Script) == "" {
		return fail(join(prefix, "script"), "required: give the script to run")
	}
	if !utf8.ValidString(s.Script) {
		return fail(join(prefix, "script"), "not valid UTF-8")
	}
	if i := strings.IndexByte(s.Script, 0); i >= 0 {
		return fail(join(prefix, "script"), "NUL byte at byte %d: a script is text (a shell stops reading at NUL); ship binary data as a file", i)
	}
	if s.Syntax != "" && !contains(syntaxes, s.Syntax) {
		return fail(join(prefix, "syntax"), "%q is not supported: use one of %s (default bash)", s.Syntax, strings.Join(syntaxes, ", "))
	}
	if err := files(join(prefix, "files"), s.Files); err != nil {
		return err
	}
	if err := variables(join(prefix, "variables"), s.Variables); err != nil {
		return err
	}
	if s.Image != "" {
		if _, err := reference.ParseNormalizedNamed(s.Image); err != nil {
			return fail(join(prefix, "image"), "%q is not a valid image reference (%v): use e.g. alpine:3.20 or registry.example.com/team/tools@sha256:...", s.Image, err)
		}
	}
	if s.Requests != nil {
		if err := quantity(join(prefix, "requests.cpu"), s.Requests.CPU, "250m or 1"); err != nil {
			return err
		}
		if err := quantity(join(prefix, "requests.memory"), s.Requests.Memory, "512Mi or 1Gi"); err != nil {
			return err
		}
	}
	if s.TimeoutSeconds < 0 || s.TimeoutSeconds > MaxTimeoutSeconds {
		return fail(join(prefix, "timeout_seconds"), "%d is out of range: use 1..%d (0 means the worker's default)", s.TimeoutSeconds, MaxTimeoutSeconds)
	}
	if err := Capabilities(join(prefix, "capabilities"), s.Capabilities); err != nil {
		return err
	}
	if s.Profile != "" {
		if err := ProfileName(join(prefix, "profile"), s.Profile); err != nil {
			return err
		}
	}
	if err := Overrides(join(prefix, "overrides"), s.Overrides); err != nil {
		return err
	}
	if err := packageRefs(join(prefix, "packages"), s.Packages); err != nil {
		return err
	}
	return size(prefix, s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func quantity(field, q, example string) error {
	if q == "" {
		return nil
	}
	v, err := resource.ParseQuantity(q)
	if err != nil {
		return fail(field, "%q is not a Kubernetes quantity: use e.g. %s", q, example)
	}
	if v.Sign() <= 0 {
		return fail(field, "%q must be more than zero", q)
	}
	return nil
}

func files(field string, fs []api.File) error {
	if len(fs) > MaxListLen {
		return fail(field, "%d files; at most %d", len(fs), MaxListLen)
	}
	seen := map[string]bool{}
	for i, f := range fs {
		pf := fmt.Sprintf("%s[%d].path", field, i)
		switch {
		case f.Path == "":
			return fail(pf, "required: a relative path such as config/app.json")
		case len(f.Path) > 1024 || !utf8.ValidString(f.Path) || strings.ContainsAny(f.Path, "\x00\\"):
			return fail(pf, "%q is not a usable path: at most 1024 bytes of UTF-8, '/' as the separator", f.Path)
		case strings.HasPrefix(f.Path, "/"):
			return fail(pf, "%q is absolute: give a path relative to the script's working directory", f.Path)
		case path.Clean(f.Path) != f.Path || f.Path == "." || f.Path == ".." || strings.HasPrefix(f.Path, "../"):
			return fail(pf, "%q is not a clean relative path (no '..', '.', '//' or trailing '/'): write it as %q", f.Path, path.Clean(f.Path))
		}
		if seen[f.Path] {
			return fail(pf, "%q is given twice", f.Path)
		}
		seen[f.Path] = true
		if f.Mode > 0o777 {
			return fail(fmt.Sprintf("%s[%d].mode", field, i), "%#o is not a permission mode: use 0..0777 (e.g. 420 for 0644)", f.Mode)
		}
	}
	return nil
}

func variables(field string, vs []api.Variable) error {
	if len(vs) > MaxListLen {
		return fail(field, "%d variables; at most %d", len(vs), MaxListLen)
	}
	seen := map[string]bool{}
	for i, v := range vs {
		nf := fmt.Sprintf("%s[%d].name", field, i)
		if v.Name == "" {
			return fail(nf, "required: an environment variable name")
		}
		if len(v.Name) > 256 || !envName.MatchString(v.Name) {
			return fail(nf, "%q is not an environment variable name: use letters, digits and '_', not starting with a digit", v.Name)
		}
		if seen[v.Name] {
			return fail(nf, "%q is given twice", v.Name)
		}
		seen[v.Name] = true
		if !utf8.ValidString(v.Value) || strings.ContainsRune(v.Value, 0) {
			return fail(fmt.Sprintf("%s[%d].value", field, i), "must be UTF-8 without NUL bytes (it becomes an environment variable)")
		}
	}
	return nil
}

// size enforces MaxOperationBytes, naming the largest part so the user knows what to move.
func size(prefix string, s *api.OperationSpec) error {
	total := len(s.Script)
	biggest, biggestField := len(s.Script), join(prefix, "script")
	for i, f := range s.Files {
		n := len(f.Path) + len(f.Content)
		total += n
		if n > biggest {
			biggest, biggestField = n, fmt.Sprintf("%s[%d].content", join(prefix, "files"), i)
		}
	}
	for i, v := range s.Variables {
		n := len(v.Name) + len(v.Value)
		total += n
		if n > biggest {
			biggest, biggestField = n, fmt.Sprintf("%s[%d].value", join(prefix, "variables"), i)
		}
	}
	if total > MaxOperationBytes {
		return &Error{Field: biggestField, Code: api.CodeTooLarge, Message: fmt.Sprintf(
			"the operation's script, files and variables add up to %d KiB (the largest part, here, is %d KiB); at most %d KiB fit, "+
				"because the worker ships them in one Kubernetes Secret (1 MiB): put large files in the step's image or fetch them in the script",
			ceilKiB(total), ceilKiB(biggest), MaxOperationBytes>>10)}
	}
	return nil
}

func ceilKiB(n int) int { return (n + 1023) / 1024 }

// DeploymentSpec checks a deployment. Steps without a pool need the deployment's pool.
func DeploymentSpec(d *api.DeploymentSpec) error {
	if strings.TrimSpace(d.Name) == "" {
		return fail("name", "required: name the deployment")
	}
	if err := name("name", d.Name, MaxNameLen); err != nil {
		return err
	}
	if d.Pool != "" {
		if err := PoolName("pool", d.Pool); err != nil {
			return err
		}
	}
	if len(d.Steps) == 0 {
		return fail("steps", "required: a deployment needs at least one step")
	}
	if len(d.Steps) > MaxSteps {
		return fail("steps", "%d steps; at most %d", len(d.Steps), MaxSteps)
	}
	for i := range d.Steps {
		prefix := fmt.Sprintf("steps[%d]", i)
		if d.Steps[i].Pool == "" && d.Pool == "" {
			return fail(prefix+".pool", "required: give the step a pool, or the deployment a default pool")
		}
		if err := OperationSpec(prefix, &d.Steps[i], true); err != nil {
			return err
		}
	}
	return nil
}
