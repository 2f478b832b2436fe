package chartgen

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/validate"
	"github.com/octo-worker/octo-worker/jobrunner/podrunner/layout"
)

// Profile is a named set of pod settings a step may choose (scriptPods.profiles.<name>; the step's
// `profile`). How it combines with scriptPods: maps (nodeSelector, labels, annotations) merge, the profile
// winning for a key; lists (tolerations, imagePullSecrets, volumes, env, envFrom) are added; single values
// (affinity, serviceAccountName, priorityClassName, runtimeClassName) and each resource request replace
// scriptPods' when set. The security context, restartPolicy, the command and the runner's volumes are not
// profile settings.
type Profile struct {
	NodeSelector       map[string]string            `json:"nodeSelector" keys:"label-key" values:"label-value" doc:"Node labels (merged)."`
	Tolerations        []corev1.Toleration          `json:"tolerations" kind:"objects" doc:"Tolerations (added)."`
	Affinity           *corev1.Affinity             `json:"affinity" kind:"object" doc:"Affinity (replaces)."`
	Resources          *corev1.ResourceRequirements `json:"resources" kind:"object" doc:"Requests and limits of the script container (cpu, memory, ephemeral-storage, nvidia.com/gpu...). A step's own requests are capped by maxRequests and these limits."`
	Labels             map[string]string            `json:"labels" keys:"label-key" values:"label-value" doc:"Labels of the Job and pod (merged)."`
	Annotations        map[string]string            `json:"annotations" keys:"label-key" doc:"Annotations of the Job and pod (merged)."`
	Volumes            []corev1.Volume              `json:"volumes" kind:"objects" doc:"Extra volumes (Kubernetes Volume objects): configMap, secret or csi only."`
	VolumeMounts       []corev1.VolumeMount         `json:"volumeMounts" kind:"objects" doc:"Mounts of these volumes in the script container, outside /octo."`
	Env                []corev1.EnvVar              `json:"env" kind:"objects" doc:"Environment variables of the script container."`
	EnvFrom            []corev1.EnvFromSource       `json:"envFrom" kind:"objects" doc:"ConfigMaps and Secrets as environment variables."`
	ImagePullSecrets   []LocalObjectReference       `json:"imagePullSecrets" doc:"Image pull Secrets (added)."`
	ServiceAccountName string                       `json:"serviceAccountName" format:"dns-subdomain" doc:"An existing ServiceAccount to run as (its token is mounted); grant it what the step needs."`
	PriorityClassName  string                       `json:"priorityClassName" format:"dns-subdomain" doc:"PriorityClass of the pod."`
	RuntimeClassName   string                       `json:"runtimeClassName" format:"dns-subdomain" doc:"RuntimeClass of the pod."`
}

// AllowOverrides is what a step may change beyond its profile. Nothing else is representable: a step cannot
// touch the command, restartPolicy, the runner's volumes or the security context.
type AllowOverrides struct {
	NodeSelector map[string]string   `json:"nodeSelector" keys:"label-key" doc:"Node label keys a step may set, each with a regular expression its value must match whole, e.g. topology.kubernetes.io/zone: 'eu-west-1[abc]'."`
	Tolerations  []AllowedToleration `json:"tolerations" doc:"Tolerations a step may add, each exactly as listed."`
}

// AllowedToleration is a toleration a step may add.
type AllowedToleration struct {
	Key      string `json:"key" format:"label-key"`
	Operator string `json:"operator" enum:"Equal,Exists"`
	Value    string `json:"value" format:"label-value"`
	Effect   string `json:"effect" enum:"NoSchedule,PreferNoSchedule,NoExecute"`
}

// Policy is the allow-list as the worker advertises it.
func (a AllowOverrides) Policy() *api.OverridePolicy {
	p := &api.OverridePolicy{}
	if len(a.NodeSelector) > 0 {
		p.NodeSelector = a.NodeSelector
	}
	for _, t := range a.Tolerations {
		p.Tolerations = append(p.Tolerations, api.Toleration(t))
	}
	return p
}

// ProfileNames returns the profiles' names, sorted.
func (s ScriptPods) ProfileNames() []string { return sortedKeys(s.Profiles) }

func checkProfiles(ps *problems, s ScriptPods) {
	for _, name := range s.ProfileNames() {
		p, at := s.Profiles[name], "scriptPods.profiles."+name
		checkTolerations(ps, at+".tolerations", p.Tolerations)
		if r := p.Resources; r != nil {
			for _, n := range sortedKeys(r.Requests) {
				if req, lim := r.Requests[n], r.Limits[n]; !lim.IsZero() && req.Cmp(lim) > 0 {
					ps.add(fmt.Sprintf("%s.resources.requests.%s", at, n), "%s is more than the limit %s: lower the request or raise the limit", req.String(), lim.String())
				}
			}
		}
		volumes := map[string]bool{}
		for i, v := range p.Volumes {
			vp := fmt.Sprintf("%s.volumes[%d]", at, i)
			n := len(slices.DeleteFunc([]bool{v.ConfigMap != nil, v.Secret != nil, v.CSI != nil}, func(set bool) bool { return !set }))
			if v.VolumeSource != (corev1.VolumeSource{ConfigMap: v.ConfigMap, Secret: v.Secret, CSI: v.CSI}) || n != 1 {
				ps.add(vp, "must be one configMap, secret or csi volume: other kinds (hostPath...) are not allowed")
			}
			if strings.HasPrefix(v.Name, "octo-") || volumes[v.Name] {
				ps.add(vp+".name", "%q is used twice or starts with octo- (the runner's volumes): choose another name", v.Name)
			}
			volumes[v.Name] = true
		}
		for i, m := range p.VolumeMounts {
			mp := fmt.Sprintf("%s.volumeMounts[%d]", at, i)
			if !volumes[m.Name] {
				ps.add(mp+".name", "%q is not a volume of this profile: mount one of its volumes", m.Name)
			}
			if runner, c := layout.Root, path.Clean(m.MountPath); !path.IsAbs(c) || c == "/" || c == runner || strings.HasPrefix(c, runner+"/") {
				ps.add(mp+".mountPath", "%q must be an absolute path outside %s (the runner's files)", m.MountPath, runner)
			}
		}
		for i, e := range p.Env {
			if !envName.MatchString(e.Name) || e.Name == "HOME" || strings.HasPrefix(e.Name, "OCTO_") {
				ps.add(fmt.Sprintf("%s.env[%d].name", at, i), "%q is not a variable name or is set by the runner (HOME, OCTO_*): choose another", e.Name)
			}
		}
	}
	var ve *validate.Error // the dispatch server's rule for an allow-list, at the values' path
	if err := validate.Policy("scriptPods.allowOverrides", s.AllowOverrides.Policy()); errors.As(err, &ve) {
		ps.add(strings.Replace(ve.Field, ".node_selector.", ".nodeSelector.", 1), "%s", ve.Message)
	}
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := slices.Collect(maps.Keys(m))
	slices.Sort(keys)
	return keys
}
