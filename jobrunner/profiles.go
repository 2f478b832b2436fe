package jobrunner

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/octo-worker/octo-worker/chartgen"
	"github.com/octo-worker/octo-worker/dispatch/api"
	"github.com/octo-worker/octo-worker/dispatch/validate"
)

// ProfileNames returns the names of the pod profiles the worker offers, sorted (what it advertises).
// Never nil: an empty list tells the dispatch server that the worker offers none.
func (c *Config) ProfileNames() []string {
	return append([]string{}, chartgen.ScriptPods{Profiles: c.Profiles}.ProfileNames()...)
}

// profileOf returns the profile an operation names (the zero Profile for none). The server leases an
// operation only to a worker that offers its profile and allows its overrides; this is the worker's own guard,
// for a worker whose values changed since.
func (c *Config) profileOf(op *api.Operation) (chartgen.Profile, error) {
	p, ok := c.Profiles[op.Profile]
	if op.Profile != "" && !ok {
		offered := "none"
		if len(c.Profiles) > 0 {
			offered = strings.Join(c.ProfileNames(), ", ")
		}
		return p, fmt.Errorf("profile: this worker offers no profile %q (it offers: %s): its scriptPods.profiles changed since the step was submitted; submit it again",
			op.Profile, offered)
	}
	if err := validate.Allows("overrides", c.AllowOverrides, op.Overrides); err != nil {
		return p, fmt.Errorf("this worker does not allow the step's overrides: %w", err)
	}
	return p, nil
}

// applyProfile puts an operation's profile p and its overrides into its pod (see chartgen.Profile for how
// they combine with scriptPods): the scheduling fields, limits, volumes, env, pull secrets and service
// account. Labels and annotations are operationLabels' and operationAnnotations'. It never touches the
// command, restartPolicy, the runner's volumes or the security context.
func applyProfile(spec *corev1.PodSpec, p chartgen.Profile, o *api.PodOverrides) {
	if o == nil {
		o = &api.PodOverrides{}
	}
	if len(p.NodeSelector)+len(o.NodeSelector) > 0 {
		sel := maps.Clone(spec.NodeSelector)
		if sel == nil {
			sel = map[string]string{}
		}
		maps.Copy(sel, p.NodeSelector)
		maps.Copy(sel, o.NodeSelector)
		spec.NodeSelector = sel
	}
	spec.Tolerations = append(slices.Clone(spec.Tolerations), p.Tolerations...)
	for _, t := range o.Tolerations {
		spec.Tolerations = append(spec.Tolerations, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOperator(t.Operator),
			Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	if p.Affinity != nil {
		spec.Affinity = p.Affinity.DeepCopy()
	}
	for _, s := range p.ImagePullSecrets {
		spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s.Name})
	}
	for _, v := range p.Volumes {
		spec.Volumes = append(spec.Volumes, *v.DeepCopy())
	}
	if p.ServiceAccountName != "" {
		spec.ServiceAccountName, spec.AutomountServiceAccountToken = p.ServiceAccountName, ptr(true)
	}
	if p.PriorityClassName != "" {
		spec.PriorityClassName = p.PriorityClassName
	}
	if p.RuntimeClassName != "" {
		spec.RuntimeClassName = ptr(p.RuntimeClassName)
	}
	script := &spec.Containers[0]
	script.VolumeMounts = append(script.VolumeMounts, p.VolumeMounts...)
	script.Env = append(script.Env, p.Env...)
	script.EnvFrom = append(script.EnvFrom, p.EnvFrom...)
	if p.Resources != nil && len(p.Resources.Limits) > 0 {
		script.Resources.Limits = p.Resources.Limits.DeepCopy()
	}
}
