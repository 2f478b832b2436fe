package store

import (
	"encoding/json"
	"fmt"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/mask"
)

// Both drivers keep an operation's spec and a worker's offer in the same JSON columns (lists as JSON arrays,
// objects as JSON, NULL for none); the encoding and decoding of those columns live here, once.

// OpBody is the part of a spec kept in an operation's body column: what the worker needs and a list leaves out.
type OpBody struct {
	Script    string         `json:"script"`
	Files     []api.File     `json:"files,omitempty"`
	Variables []api.Variable `json:"variables,omitempty"` // sensitive values replaced by mask.Placeholder
	Packages  []string       `json:"packages,omitempty"`
	Resolved  []api.Package  `json:"resolved_packages,omitempty"`
}

// OpJSON is an operation's JSON columns as stored; nil is NULL.
type OpJSON struct {
	Requests, Capabilities, Overrides, Usage *string
	Body                                     *string        // read only with the full operation
	Secrets                                  *string        // variable index -> sensitive value
	secrets                                  map[int]string // decoded by Decode
}

// EncodeOp returns the JSON columns of a new operation (no usage yet) and its variables as stored: sensitive
// values masked in the body, kept apart in Secrets.
func EncodeOp(spec api.OperationSpec, resolved []api.Package) (OpJSON, []api.Variable, error) {
	var j OpJSON
	body := OpBody{Script: spec.Script, Files: spec.Files, Packages: spec.Packages, Resolved: resolved}
	secrets := map[int]string{}
	for i, v := range spec.Variables {
		if v.Sensitive {
			secrets[i] = v.Value
			v.Value = mask.Placeholder
		}
		body.Variables = append(body.Variables, v)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return j, nil, fmt.Errorf("encoding operation body: %w", err)
	}
	j.Body = ptr(string(b))
	if len(secrets) > 0 {
		j.Secrets = jsonPtr(secrets)
	}
	if spec.Requests != nil {
		j.Requests = jsonPtr(spec.Requests)
	}
	if len(spec.Capabilities) > 0 {
		j.Capabilities = jsonPtr(spec.Capabilities)
	}
	if !spec.Overrides.Empty() {
		j.Overrides = jsonPtr(spec.Overrides)
	}
	return j, body.Variables, nil
}

// EncodeUsage is the usage column of a result: nil (NULL) when not measured.
func EncodeUsage(u *api.Usage) *string {
	if u == nil {
		return nil
	}
	return jsonPtr(u)
}

// Decode fills o's fields held in the JSON columns read (the body's only when Body was read) and keeps the
// sensitive values for Unmasked.
func (j *OpJSON) Decode(o *api.Operation) error {
	if j.Requests != nil {
		o.Requests = new(api.Resources)
		if err := json.Unmarshal([]byte(*j.Requests), o.Requests); err != nil {
			return fmt.Errorf("decoding requests of %s: %w", o.ID, err)
		}
	}
	if j.Capabilities != nil {
		if err := json.Unmarshal([]byte(*j.Capabilities), &o.Capabilities); err != nil {
			return fmt.Errorf("decoding capabilities of %s: %w", o.ID, err)
		}
	}
	if j.Overrides != nil {
		o.Overrides = new(api.PodOverrides)
		if err := json.Unmarshal([]byte(*j.Overrides), o.Overrides); err != nil {
			return fmt.Errorf("decoding overrides of %s: %w", o.ID, err)
		}
	}
	if j.Usage != nil {
		o.Usage = new(api.Usage)
		if err := json.Unmarshal([]byte(*j.Usage), o.Usage); err != nil {
			return fmt.Errorf("decoding usage of %s: %w", o.ID, err)
		}
	}
	if j.Body != nil {
		var b OpBody
		if err := json.Unmarshal([]byte(*j.Body), &b); err != nil {
			return fmt.Errorf("decoding body of %s: %w", o.ID, err)
		}
		o.Script, o.Files, o.Variables = b.Script, b.Files, b.Variables
		o.Packages, o.ResolvedPackages = b.Packages, b.Resolved
	}
	if j.Secrets != nil {
		if err := json.Unmarshal([]byte(*j.Secrets), &j.secrets); err != nil {
			return fmt.Errorf("decoding sensitive values of %s: %w", o.ID, err)
		}
	}
	return nil
}

// Unmasked returns op with the sensitive values Decode read put back in clear (for a lease).
func (j *OpJSON) Unmasked(op api.Operation) api.Operation {
	if len(j.secrets) > 0 {
		op.Variables = append([]api.Variable(nil), op.Variables...)
		for i, v := range j.secrets {
			if i >= 0 && i < len(op.Variables) {
				op.Variables[i].Value = v
			}
		}
	}
	return op
}

// SensitiveValues decodes a secrets column: the sensitive values it holds, in no particular order.
func SensitiveValues(secrets string) ([]string, error) {
	var m map[int]string
	if err := json.Unmarshal([]byte(secrets), &m); err != nil {
		return nil, fmt.Errorf("decoding sensitive values: %w", err)
	}
	values := make([]string, 0, len(m))
	for _, v := range m {
		values = append(values, v)
	}
	return values, nil
}

// WorkerJSON is a worker's JSON columns as stored; nil is NULL.
type WorkerJSON struct {
	Pools, Capabilities      string
	Checks, Profiles, Policy *string
}

// EncodeOffer returns the profiles and allow_overrides columns of a worker: nil (NULL) for none.
func EncodeOffer(profiles []string, p *api.OverridePolicy) (names, policy *string) {
	if len(profiles) > 0 {
		names = jsonPtr(profiles)
	}
	if p != nil {
		policy = jsonPtr(p)
	}
	return names, policy
}

// EncodeList is a list column: a JSON array, [] for none.
func EncodeList(list []string) string {
	if list == nil {
		list = []string{}
	}
	b, _ := json.Marshal(list)
	return string(b)
}

// EncodeChecks is the checks column of a heartbeat: nil (NULL) when it has none.
func EncodeChecks(checks []api.Check) *string {
	if len(checks) == 0 {
		return nil
	}
	return jsonPtr(checks)
}

// Decode fills w's fields held in the JSON columns.
func (j WorkerJSON) Decode(w *api.Worker) error {
	if j.Profiles != nil {
		if err := json.Unmarshal([]byte(*j.Profiles), &w.Profiles); err != nil {
			return fmt.Errorf("decoding worker profiles: %w", err)
		}
	}
	if j.Policy != nil {
		w.AllowOverrides = new(api.OverridePolicy)
		if err := json.Unmarshal([]byte(*j.Policy), w.AllowOverrides); err != nil {
			return fmt.Errorf("decoding worker override allow-list: %w", err)
		}
	}
	if j.Checks != nil {
		if err := json.Unmarshal([]byte(*j.Checks), &w.Checks); err != nil {
			return fmt.Errorf("decoding worker checks: %w", err)
		}
	}
	if err := json.Unmarshal([]byte(j.Pools), &w.Pools); err != nil {
		return fmt.Errorf("decoding worker pools: %w", err)
	}
	if err := json.Unmarshal([]byte(j.Capabilities), &w.Capabilities); err != nil {
		return fmt.Errorf("decoding worker capabilities: %w", err)
	}
	return nil
}

func ptr(s string) *string { return &s }

// jsonPtr encodes v, which is always encodable (plain API types).
func jsonPtr(v any) *string {
	b, _ := json.Marshal(v)
	return ptr(string(b))
}
