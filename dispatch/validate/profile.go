package validate

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// ProfileName checks a pod profile's name: a DNS label, as in the chart's scriptPods.profiles.
func ProfileName(field, name string) error {
	if len(validation.IsDNS1123Label(name)) > 0 {
		return fail(field, "%q is not a profile name: lower-case letters, digits and '-', at most 63, as in the worker's scriptPods.profiles", name)
	}
	return nil
}

// profiles checks the profile names a worker offers.
func profiles(field string, names []string) error {
	if len(names) > api.MaxProfiles {
		return fail(field, "%d profiles; at most %d", len(names), api.MaxProfiles)
	}
	for i, n := range names {
		if err := ProfileName(fmt.Sprintf("%s[%d]", field, i), n); err != nil {
			return err
		}
	}
	return nil
}

// Overrides checks the form of a step's pod overrides (field is their path); whether a worker allows them
// is Allows'.
func Overrides(field string, o *api.PodOverrides) error {
	if o == nil {
		return nil
	}
	return podFields(field, o.NodeSelector, o.Tolerations, validation.IsValidLabelValue)
}

// Policy checks a worker's override allow-list: node label keys with patterns that compile, and tolerations.
func Policy(field string, p *api.OverridePolicy) error {
	if p == nil {
		return nil
	}
	return podFields(field, p.NodeSelector, p.Tolerations, func(pattern string) []string {
		if _, err := regexp.Compile(pattern); err != nil || len(pattern) > api.MaxPatternLen {
			return []string{fmt.Sprintf("a regular expression of at most %d bytes", api.MaxPatternLen)}
		}
		return nil
	})
}

// podFields checks node selector keys (and their values with value) and tolerations.
func podFields(field string, sel map[string]string, ts []api.Toleration, value func(string) []string) error {
	if len(sel) > api.MaxOverrideItems || len(ts) > api.MaxOverrideItems {
		return fail(field, "at most %d node selector entries and %d tolerations", api.MaxOverrideItems, api.MaxOverrideItems)
	}
	for _, k := range sortedKeys(sel) {
		if errs := append(validation.IsQualifiedName(k), value(sel[k])...); len(errs) > 0 {
			return fail(field+".node_selector."+k, "%q: %q is not a node label key and value (%s)", k, sel[k], strings.Join(errs, "; "))
		}
	}
	for i, t := range ts {
		bad := !slices.Contains([]string{"", "Equal", "Exists"}, t.Operator) || t.Operator == "Exists" && t.Value != "" ||
			t.Operator != "Exists" && t.Key == "" || !slices.Contains([]string{"", "NoSchedule", "PreferNoSchedule", "NoExecute"}, t.Effect) ||
			t.Key != "" && len(validation.IsQualifiedName(t.Key)) > 0 || len(validation.IsValidLabelValue(t.Value)) > 0
		if bad {
			return fail(fmt.Sprintf("%s.tolerations[%d]", field, i), "%s is not a toleration: a taint key, operator Equal with a value or Exists without, effect NoSchedule, PreferNoSchedule, NoExecute or empty", tolerationText(t))
		}
	}
	return nil
}

// Allows says whether a worker's allow-list p permits a step's overrides o (already checked by Overrides):
// every node selector key is listed and its value matches the key's pattern whole, and every toleration is
// one of the listed ones. Its error names the first override refused (field is the overrides' path) and what
// the worker allows.
func Allows(field string, p *api.OverridePolicy, o *api.PodOverrides) error {
	if o.Empty() {
		return nil
	}
	if p == nil {
		p = &api.OverridePolicy{}
	}
	for _, k := range sortedKeys(o.NodeSelector) {
		pattern, ok := p.NodeSelector[k]
		if !ok {
			return fail(field+".node_selector."+k, "overriding node label %q is not allowed (allowed keys: %v): use a profile that sets it, or ask for it in scriptPods.allowOverrides.nodeSelector", k, sortedKeys(p.NodeSelector))
		}
		if re, err := regexp.Compile(`^(?:` + pattern + `)$`); err != nil || !re.MatchString(o.NodeSelector[k]) {
			return fail(field+".node_selector."+k, "%q is not allowed for node label %q: the value must match %q (scriptPods.allowOverrides.nodeSelector)", o.NodeSelector[k], k, pattern)
		}
	}
	equal := func(t api.Toleration) api.Toleration {
		t.Operator = cmpOr(t.Operator, "Equal")
		return t
	}
	for i, t := range o.Tolerations {
		if !slices.ContainsFunc(p.Tolerations, func(a api.Toleration) bool { return equal(a) == equal(t) }) {
			allowed := make([]string, len(p.Tolerations))
			for j, a := range p.Tolerations {
				allowed[j] = tolerationText(a)
			}
			return fail(fmt.Sprintf("%s.tolerations[%d]", field, i), "toleration %s is not allowed (allowed: [%s]): use one listed in scriptPods.allowOverrides.tolerations", tolerationText(t), strings.Join(allowed, ", "))
		}
	}
	return nil
}

// tolerationText prints a toleration as key=value:effect, or key:effect with operator Exists.
func tolerationText(t api.Toleration) string {
	s := t.Key
	if t.Operator != "Exists" {
		s += "=" + t.Value
	}
	return s + ":" + t.Effect
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
