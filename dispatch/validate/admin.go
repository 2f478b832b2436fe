package validate

import (
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// CreatePool checks a pool creation.
func CreatePool(r *api.CreatePoolRequest) error {
	if err := PoolName("name", r.Name); err != nil {
		return err
	}
	return name("description", r.Description, MaxMessageLen)
}

// CreateToken checks a registration token request.
func CreateToken(r *api.CreateTokenRequest) error {
	if err := poolList("pools", r.Pools, true); err != nil {
		return err
	}
	if r.TTLSeconds < 0 || r.TTLSeconds > MaxTokenTTLSeconds {
		return fail("ttl_seconds", "%d is out of range: use 1..%d (0 means the default, 24 h)", r.TTLSeconds, MaxTokenTTLSeconds)
	}
	return nil
}

// DesiredVersion checks a desired-version request.
func DesiredVersion(r *api.DesiredVersion) error {
	if err := Version("version", r.Version); err != nil {
		return err
	}
	if r.ChartURL != "" || r.ChartSHA256 != "" {
		return fail("chart_url", "set by the server from the uploaded chart; leave chart_url and chart_sha256 out")
	}
	return nil
}

// AdviceQuery checks the query of the requests advice: a pool, and optionally an operation (step) name.
func AdviceQuery(pool, step string) error {
	if err := PoolName("pool", pool); err != nil {
		return err
	}
	return name("step", step, MaxNameLen)
}
