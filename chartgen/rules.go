package chartgen

import (
	"reflect"

	corev1 "k8s.io/api/core/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// The rules below are the part of Validate that a JSON schema can say too. They live here once: Validate
// applies them in Go, and the generated values.schema.json carries them (with these messages as x-*
// extensions, which chartgen's schema check reports), so `helm lint --strict` and `helm template` refuse the
// same values, at the same path.

// Messages of the rules that both Validate and the schema apply.
const (
	msgNoToken     = "must be set: a registration token from the dispatch server, or an existing Secret in worker.registrationTokenSecret.name"
	msgBothTokens  = "set either worker.registrationToken or worker.registrationTokenSecret.name, not both"
	msgDocker      = "\"" + api.CapabilityDocker + "\" cannot be advertised: " + api.NoDocker + "; remove it"
	whyRestricted  = "Pod Security 'restricted' (the chart's baseline) requires it"
	msgNonRoot     = "must be true: " + whyRestricted
	msgRootUser    = "must not be 0 (root): " + whyRestricted
	msgSeccomp     = "must be RuntimeDefault or Localhost: " + whyRestricted
	msgEscalation  = "must be false: " + whyRestricted
	msgPrivileged  = "must not be true: " + whyRestricted
	msgProcMount   = "must be Default (an unmasked /proc exposes the host): " + whyRestricted
	msgSELinuxType = "must be empty, container_t, container_init_t, container_kvm_t or container_engine_t (spc_t and other types escape the container): " + whyRestricted
	msgSELinuxUser = "must be empty (a custom SELinux user or role escapes the container's confinement): " + whyRestricted
	msgSysctl      = "is not a safe sysctl: Pod Security allows only " + safeSysctlList
	msgHostProcess = "must not be true (a Windows host process runs on the node): " + whyRestricted
	msgAppArmor    = "must be RuntimeDefault or Localhost: " + whyRestricted
	msgCapAdd      = "cannot be added: " + whyRestricted + " (only NET_BIND_SERVICE)"
	msgTolOperator = "is not an operator: use Equal or Exists"
	msgTolEffect   = "is not a taint effect: use NoSchedule, PreferNoSchedule or NoExecute (or leave it empty for all)"
)

// Pod Security's lists (baseline and restricted, Kubernetes v1.37).
var (
	safeSysctls = []string{
		"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
		"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
		"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
		"net.ipv4.tcp_keepalive_probes",
	}
	safeSELinuxTypes = []string{"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
	confinedProfiles = []string{string(corev1.SeccompProfileTypeRuntimeDefault), string(corev1.SeccompProfileTypeLocalhost)}
)

const safeSysctlList = "kernel.shm_rmid_forced, net.ipv4.ip_local_port_range, net.ipv4.ip_unprivileged_port_start, net.ipv4.tcp_syncookies, net.ipv4.ping_group_range, net.ipv4.ip_local_reserved_ports and net.ipv4.tcp_keepalive_*/tcp_fin_timeout"

// structRules add cross-field rules to the schema of a struct type.
var structRules = map[reflect.Type]func(s map[string]any){
	reflect.TypeOf(Worker{}): func(s map[string]any) {
		// A token, or the name of a Secret holding one. "Not both" stays a template `fail`: a schema `not`
		// would report it at worker, not at the value to change.
		s["anyOf"] = []any{
			map[string]any{"required": []any{"registrationToken"}, "properties": map[string]any{"registrationToken": map[string]any{"minLength": 1}}},
			map[string]any{"required": []any{"registrationTokenSecret"}, "properties": map[string]any{"registrationTokenSecret": map[string]any{
				"required": []any{"name"}, "properties": map[string]any{"name": map[string]any{"minLength": 1}}}}},
		}
		s["x-anyOf"] = rule("registrationToken", msgNoToken)
		caps := s["properties"].(map[string]any)["capabilities"].(map[string]any)["items"].(map[string]any)
		caps["not"] = map[string]any{"const": api.CapabilityDocker}
		caps["x-not"] = rule("", msgDocker)
	},
}

// objectRules is the schema of a Kubernetes type the values hold whole (kind:"object"): open, except for the
// fields Pod Security and the chart constrain.
func objectRules(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	props := map[string]any{}
	switch t {
	case reflect.TypeOf(corev1.PodSecurityContext{}):
		props["runAsNonRoot"] = valueRule(map[string]any{"const": true}, msgNonRoot)
		props["runAsUser"] = valueRule(map[string]any{"minimum": 1}, msgRootUser)
		props["seccompProfile"] = object(map[string]any{"type": valueRule(map[string]any{"enum": anyList(confinedProfiles)}, msgSeccomp)})
		props["appArmorProfile"] = object(map[string]any{"type": valueRule(map[string]any{"enum": anyList(confinedProfiles)}, msgAppArmor)})
		props["seLinuxOptions"] = seLinuxRules()
		props["windowsOptions"] = object(map[string]any{"hostProcess": valueRule(map[string]any{"const": false}, msgHostProcess)})
		props["sysctls"] = map[string]any{"type": "array", "items": object(map[string]any{
			"name": valueRule(map[string]any{"enum": anyList(safeSysctls)}, msgSysctl)})}
	case reflect.TypeOf(corev1.SecurityContext{}):
		props["runAsNonRoot"] = valueRule(map[string]any{"const": true}, msgNonRoot)
		props["runAsUser"] = valueRule(map[string]any{"minimum": 1}, msgRootUser)
		props["allowPrivilegeEscalation"] = valueRule(map[string]any{"const": false}, msgEscalation)
		props["privileged"] = valueRule(map[string]any{"const": false}, msgPrivileged)
		props["procMount"] = valueRule(map[string]any{"enum": []any{string(corev1.DefaultProcMount)}}, msgProcMount)
		props["seccompProfile"] = object(map[string]any{"type": valueRule(map[string]any{"enum": anyList(confinedProfiles)}, msgSeccomp)})
		props["appArmorProfile"] = object(map[string]any{"type": valueRule(map[string]any{"enum": anyList(confinedProfiles)}, msgAppArmor)})
		props["seLinuxOptions"] = seLinuxRules()
		props["windowsOptions"] = object(map[string]any{"hostProcess": valueRule(map[string]any{"const": false}, msgHostProcess)})
		props["capabilities"] = object(map[string]any{"add": map[string]any{"type": "array",
			"items": valueRule(map[string]any{"enum": []any{"NET_BIND_SERVICE"}}, msgCapAdd)}})
	case reflect.TypeOf(corev1.Toleration{}):
		props["key"] = map[string]any{"type": "string", "pattern": "^$|" + formatPatterns["label-key"], "maxLength": formatMaxLength["label-key"]}
		props["operator"] = valueRule(map[string]any{"enum": []any{"", "Equal", "Exists"}}, msgTolOperator)
		props["effect"] = valueRule(map[string]any{"enum": []any{"", "NoSchedule", "PreferNoSchedule", "NoExecute"}}, msgTolEffect)
	}
	if len(props) == 0 {
		return map[string]any{}
	}
	return map[string]any{"properties": props}
}

func seLinuxRules() map[string]any {
	return object(map[string]any{
		"type": valueRule(map[string]any{"enum": anyList(safeSELinuxTypes)}, msgSELinuxType),
		"user": valueRule(map[string]any{"enum": []any{""}}, msgSELinuxUser),
		"role": valueRule(map[string]any{"enum": []any{""}}, msgSELinuxUser),
	})
}

func object(props map[string]any) map[string]any {
	return map[string]any{"type": "object", "properties": props}
}

// rule is a message for the schema check: the value path under the failing instance ("" for itself) and what
// to do.
func rule(path, message string) map[string]any {
	return map[string]any{"path": path, "message": message}
}

// valueRule adds a message to a schema that constrains one value (const, enum, minimum).
func valueRule(s map[string]any, message string) map[string]any {
	s["x-value"] = rule("", message)
	return s
}
