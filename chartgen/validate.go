package chartgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/octo-worker/octo-worker/dispatch/api"
)

// Validate runs the checks a JSON schema cannot express: quantities parse and requests fit their caps and
// limits, durations are within bounds, the server URL is absolute, pools are non-empty and distinct, exactly one
// registration token source is set, image references are valid, RBAC rules are well-formed, and the security
// contexts still pass Pod Security "restricted". It also re-checks the formats the schema checks, so Values
// built in Go are held to the same rules. It returns nil when the values are valid.
func (v Values) Validate() []Problem {
	var ps problems
	checkLeaves(&ps, "", reflect.ValueOf(v))
	checkLogLimit(&ps, v.ScriptPods.LogLimit)

	w := v.Worker
	if w.ServerURL != "" && regexp.MustCompile(formatPatterns["uri"]).MatchString(w.ServerURL) {
		u, err := url.Parse(w.ServerURL)
		switch {
		case err != nil:
			ps.add("worker.serverUrl", "%q is not a URL (%v): write e.g. \"https://deploy.example.com\"", w.ServerURL, err)
		case u.Host == "":
			ps.add("worker.serverUrl", "%q has no host: write e.g. \"https://deploy.example.com\"", w.ServerURL)
		case u.User != nil:
			ps.add("worker.serverUrl", "must not contain credentials: put the registration token in worker.registrationToken")
		}
	}
	if len(w.Pools) == 0 {
		ps.add("worker.pools", "needs at least one worker pool: e.g. worker.pools={default}")
	}
	hasToken, hasSecret := w.RegistrationToken != "", w.RegistrationTokenSecret.Name != ""
	switch {
	case hasToken && hasSecret:
		ps.add("worker.registrationToken", msgBothTokens)
	case !hasToken && !hasSecret:
		ps.add("worker.registrationToken", msgNoToken)
	case hasSecret && w.RegistrationTokenSecret.Key == "":
		ps.add("worker.registrationTokenSecret.key", "must name the key of the Secret that holds the token")
	}
	for i, c := range w.Capabilities {
		if c == api.CapabilityDocker {
			ps.add(fmt.Sprintf("worker.capabilities[%d]", i), msgDocker)
		}
	}
	for k := range w.ExtraEnv {
		if !envName.MatchString(k) {
			ps.add("worker.extraEnv."+k, "is not an environment variable name: letters, digits and '_', not starting with a digit")
		} else if strings.HasPrefix(k, "OCTO_") {
			ps.add("worker.extraEnv."+k, "OCTO_ variables are set by the chart itself: use the matching value instead")
		}
	}

	def := Defaults()
	checkNotAbove(&ps, "resources.requests", v.Resources.Requests, def.Resources.Requests, "resources.limits", v.Resources.Limits, "limit")
	checkNotAbove(&ps, "scriptPods.resources.requests", v.ScriptPods.Resources.Requests, def.ScriptPods.Resources.Requests, "scriptPods.resources.maxRequests", v.ScriptPods.Resources.MaxRequests, "maxRequests")
	checkRef(&ps, "image", v.Image)
	checkRef(&ps, "scriptPods.worker.image", v.ScriptPods.Worker.Image)

	if !v.ServiceAccount.Create && v.ServiceAccount.Name == "" {
		ps.add("serviceAccount.name", "must name an existing ServiceAccount when serviceAccount.create is false")
	}
	sa := v.ScriptPods.ServiceAccount
	if !sa.Create && sa.Name == "" {
		ps.add("scriptPods.serviceAccount.name", "must name an existing ServiceAccount when scriptPods.serviceAccount.create is false")
	}
	if !sa.Create && (len(sa.Rules) > 0 || len(sa.TargetNamespaces) > 0 || sa.ClusterRole != "") {
		ps.add("scriptPods.serviceAccount.create", "is false, so rules, targetNamespaces and clusterRole would be ignored: set create: true or grant the permissions to the existing ServiceAccount yourself")
	}
	if len(sa.TargetNamespaces) > 0 && len(sa.Rules) == 0 && sa.ClusterRole == "" {
		ps.add("scriptPods.serviceAccount.targetNamespaces", "grants nothing without rules or clusterRole: add rules, or remove targetNamespaces")
	}
	for i, r := range sa.Rules {
		checkRule(&ps, fmt.Sprintf("scriptPods.serviceAccount.rules[%d]", i), r)
	}

	if wp := v.ScriptPods.WarmPool; wp.Enabled && !wp.CreatePriorityClass && wp.PriorityClassName == "" {
		ps.add("scriptPods.warmPool.priorityClassName", msgWarmPoolPriority)
	}

	checkTolerations(&ps, "tolerations", v.Tolerations)
	checkTolerations(&ps, "scriptPods.tolerations", v.ScriptPods.Tolerations)
	checkPodSecurity(&ps, "podSecurityContext", v.PodSecurityContext)
	checkPodSecurity(&ps, "scriptPods.podSecurityContext", v.ScriptPods.PodSecurityContext)
	checkContainerSecurity(&ps, "securityContext", v.SecurityContext)
	checkProfiles(&ps, v.ScriptPods)
	return ps
}

// msgWarmPoolPriority is also the template's `fail` (octo-worker.validate), so that helm template refuses it
// without the values-check hook.
const msgWarmPoolPriority = "must name an existing PriorityClass with a negative value, or set scriptPods.warmPool.createPriorityClass: true: without it the placeholders have the script pods' priority and are never preempted"

type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

var (
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	apiGroup = regexp.MustCompile(`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$`)
)

// describeTag appends a value's documentation to a "must be set" message.
func describeTag(tag reflect.StructTag) string {
	if d := tag.Get("doc"); d != "" {
		return " (" + d + ")"
	}
	return ""
}

// patternMessage says what a value with a `pattern` tag must look like: its `hint` tag, or the pattern.
func patternMessage(tag reflect.StructTag) string {
	if h := tag.Get("hint"); h != "" {
		return h
	}
	return "does not match " + tag.Get("pattern")
}

// checkLeaves applies the format, enum, pattern, min, max, unique, not, keys and values tags to every value
// under v.
func checkLeaves(ps *problems, prefix string, v reflect.Value) {
	for _, f := range children(prefix, v.Type(), v) {
		switch {
		case f.Type == durationType:
			checkDuration(ps, f.Path, Duration(f.Value.Int()), f.Tag)
		case isStruct(f.Type):
			checkLeaves(ps, f.Path, f.Value)
		case f.Type.Kind() == reflect.String:
			checkString(ps, f.Path, f.Value.String(), f.Tag, false)
		case f.Type.Kind() == reflect.Int:
			checkInt(ps, f.Path, int(f.Value.Int()), f.Tag)
		case f.Type.Kind() == reflect.Map && f.Type.Elem().Kind() == reflect.String:
			checkMap(ps, f.Path, f.Value, f.Tag)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			seen := map[string]int{}
			for j := 0; j < f.Value.Len(); j++ {
				item := f.Value.Index(j).String()
				checkString(ps, fmt.Sprintf("%s[%d]", f.Path, j), item, f.Tag, true)
				if first, dup := seen[item]; dup && f.Tag.Get("unique") == "true" {
					ps.add(fmt.Sprintf("%s[%d]", f.Path, j), "repeats item %d (%q): remove the duplicate", first, item)
				}
				seen[item] = j
			}
		case f.Type.Kind() == reflect.Map && isStruct(f.Type.Elem()):
			keys := f.Value.MapKeys()
			sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
			for _, k := range keys {
				key := k.String()
				checkString(ps, f.Path+"."+key, key, reflect.StructTag(fmt.Sprintf("format:%q", f.Tag.Get("keys"))), true)
				checkLeaves(ps, f.Path+"."+key, f.Value.MapIndex(k))
			}
		case f.Type.Kind() == reflect.Slice && isStruct(f.Type.Elem()) && f.Tag.Get("kind") == "":
			for j := 0; j < f.Value.Len(); j++ {
				checkLeaves(ps, fmt.Sprintf("%s[%d]", f.Path, j), f.Value.Index(j))
			}
		}
	}
}

// checkMap applies a map's `keys` and `values` formats (label keys and values, annotation keys) with the
// rules Kubernetes applies to them.
func checkMap(ps *problems, path string, m reflect.Value, tag reflect.StructTag) {
	keys := m.MapKeys()
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		key, val := k.String(), m.MapIndex(k).String()
		if tag.Get("keys") == "label-key" {
			if errs := validation.IsQualifiedName(key); len(errs) > 0 {
				ps.add(path+"."+key, "%s (%s)", formatMessages["label-key"], strings.Join(errs, "; "))
				continue
			}
		}
		if tag.Get("values") == "label-value" {
			if errs := validation.IsValidLabelValue(val); len(errs) > 0 {
				ps.add(path+"."+key, "%q %s", val, formatMessages["label-value"])
			}
		}
	}
}

func checkString(ps *problems, path, s string, tag reflect.StructTag, item bool) {
	constrained := tag.Get("enum") != "" || tag.Get("format") != "" || tag.Get("pattern") != ""
	if s == "" && (!item || !constrained) {
		if tag.Get("required") == "true" && !item {
			ps.add(path, "must be set%s", describeTag(tag))
		}
		return
	}
	if enum := tag.Get("enum"); enum != "" {
		for _, e := range strings.Split(enum, ",") {
			if s == e {
				return
			}
		}
		ps.add(path, "%q is not allowed: use one of %s", s, strings.ReplaceAll(enum, ",", ", "))
		return
	}
	if f := tag.Get("format"); f != "" {
		if !regexp.MustCompile(formatPatterns[f]).MatchString(s) {
			ps.add(path, "%q %s", s, formatMessages[f])
			return
		}
		if n, ok := formatMaxLength[f]; ok && len(s) > n {
			ps.add(path, "is too long: at most %d characters", n)
		}
		if f == "cpu" || f == "memory" {
			q, err := resource.ParseQuantity(s)
			switch {
			case err != nil:
				ps.add(path, "%q %s", s, formatMessages[f])
			case f == "memory" && q.Cmp(resource.MustParse("1")) < 0:
				ps.add(path, "%q is less than one byte: %s", s, formatMessages[f])
			}
		}
	}
	if p := tag.Get("pattern"); p != "" && !regexp.MustCompile(p).MatchString(s) {
		ps.add(path, "%q %s", s, patternMessage(tag))
	}
}

func checkInt(ps *problems, path string, n int, tag reflect.StructTag) {
	var lo, hi int
	if _, err := fmt.Sscan(tag.Get("min"), &lo); err == nil && n < lo {
		ps.add(path, "%d is too small: the minimum is %d", n, lo)
	}
	if _, err := fmt.Sscan(tag.Get("max"), &hi); err == nil && n > hi {
		ps.add(path, "%d is too large: the maximum is %d", n, hi)
	}
}

func checkDuration(ps *problems, path string, d Duration, tag reflect.StructTag) {
	if lo, err := ParseDuration(tag.Get("min")); err == nil && tag.Get("min") != "" && d < lo {
		ps.add(path, "%s is too short: the minimum is %s", d, lo)
	}
	if hi, err := ParseDuration(tag.Get("max")); err == nil && tag.Get("max") != "" && d > hi {
		ps.add(path, "%s is too long: the maximum is %s", d, hi)
	}
}

// checkNotAbove reports each resource whose request exceeds its cap (a limit or maxRequests). The problem is
// reported at the value the user changed: the cap when the request is still its default, else the request.
func checkNotAbove(ps *problems, reqPath string, req, reqDefault Quantities, capPath string, limit Quantities, capName string) {
	for _, r := range []struct {
		name          string
		req, def, cap Quantity
	}{{"cpu", req.CPU, reqDefault.CPU, limit.CPU}, {"memory", req.Memory, reqDefault.Memory, limit.Memory}} {
		if r.req == "" || r.cap == "" {
			continue
		}
		q, err1 := resource.ParseQuantity(string(r.req))
		c, err2 := resource.ParseQuantity(string(r.cap))
		if err1 != nil || err2 != nil || q.Cmp(c) <= 0 {
			continue // parse errors are reported by checkLeaves
		}
		if r.req == r.def {
			ps.add(capPath+"."+r.name, "%s is less than %s.%s (%s): raise the %s or lower the request", r.cap, reqPath, r.name, r.req, capName)
			continue
		}
		ps.add(reqPath+"."+r.name, "%s is more than %s.%s (%s): lower the request or raise the %s", r.req, capPath, r.name, r.cap, capName)
	}
}

func checkRef(ps *problems, path string, img Image) {
	if img.Repository == "" {
		return // reported by checkLeaves
	}
	if ref := img.Ref("x"); len(ref) > 255 {
		ps.add(path+".repository", "the image reference is %d characters long: at most 255", len(ref))
	}
	if strings.Contains(img.Repository, "@") || strings.HasSuffix(img.Repository, ":") {
		ps.add(path+".repository", "must not include a tag or digest: put it in %s.tag", path)
	}
}

// UnmarshalJSON reads an image as an object (repository, tag, pullPolicy) or, where the schema allows it, as
// one reference string "repository:tag" or "repository@sha256:...".
func (i *Image) UnmarshalJSON(b []byte) error {
	var ref string
	if err := json.Unmarshal(b, &ref); err == nil {
		repo, digest, isDigest := strings.Cut(ref, "@")
		if isDigest {
			*i = Image{Repository: repo, Tag: digest}
			return nil
		}
		if c := strings.LastIndex(ref, ":"); c > strings.LastIndex(ref, "/") {
			*i = Image{Repository: ref[:c], Tag: ref[c+1:]}
			return nil
		}
		*i = Image{Repository: ref}
		return nil
	}
	type plain Image // without this method
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode((*plain)(i))
}

// Ref returns the image reference: repository:tag, or repository@sha256:... when tag is a digest. An empty
// tag uses defaultTag (the chart's appVersion).
func (i Image) Ref(defaultTag string) string {
	tag := i.Tag
	if tag == "" {
		tag = defaultTag
	}
	if strings.HasPrefix(tag, "sha256:") {
		return i.Repository + "@" + tag
	}
	return i.Repository + ":" + tag
}

func checkRule(ps *problems, path string, r PolicyRule) {
	if len(r.APIGroups) == 0 {
		ps.add(path+".apiGroups", "must list at least one API group: \"\" for the core group (pods, secrets), \"apps\", \"batch\", ... or \"*\"")
	}
	for i, g := range r.APIGroups {
		if g != "" && !apiGroup.MatchString(g) {
			ps.add(fmt.Sprintf("%s.apiGroups[%d]", path, i), "%q is not an API group: write \"\" for core, or a group such as \"apps\" or \"networking.k8s.io\"", g)
		}
	}
	if len(r.Resources) == 0 {
		ps.add(path+".resources", "must list at least one resource, e.g. deployments, or \"*\"")
	}
	if len(r.Verbs) == 0 {
		ps.add(path+".verbs", "must list at least one verb: get, list, watch, create, update, patch, delete, deletecollection or \"*\"")
	}
	for i, verb := range r.Verbs {
		if len(r.ResourceNames) > 0 && (verb == "list" || verb == "watch" || verb == "create" || verb == "deletecollection") {
			ps.add(fmt.Sprintf("%s.verbs[%d]", path, i), "%q cannot be restricted by resourceNames: move it to a rule without resourceNames", verb)
		}
	}
}

func checkTolerations(ps *problems, path string, ts []corev1.Toleration) {
	for i, t := range ts {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch t.Operator {
		case "", corev1.TolerationOpEqual:
		case corev1.TolerationOpExists:
			if t.Value != "" {
				ps.add(p+".value", "must be empty when operator is Exists")
			}
		default:
			ps.add(p+".operator", "%q %s", t.Operator, msgTolOperator)
		}
		switch t.Effect {
		case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			ps.add(p+".effect", "%q %s", t.Effect, msgTolEffect)
		}
		if t.Key == "" && t.Operator != corev1.TolerationOpExists {
			ps.add(p+".key", "must be set unless operator is Exists")
		}
		if t.Key != "" && len(validation.IsQualifiedName(t.Key)) > 0 {
			ps.add(p+".key", "%q %s", t.Key, formatMessages["label-key"])
		}
		if t.Value != "" && len(validation.IsValidLabelValue(t.Value)) > 0 {
			ps.add(p+".value", "%q %s", t.Value, formatMessages["label-value"])
		}
		if t.TolerationSeconds != nil && t.Effect != corev1.TaintEffectNoExecute {
			ps.add(p+".tolerationSeconds", "applies only to effect NoExecute")
		}
	}
}

// checkPodSecurity keeps a pod security context within Pod Security "restricted".
func checkPodSecurity(ps *problems, path string, sc *corev1.PodSecurityContext) {
	if sc == nil {
		ps.add(path, "must be set: runAsNonRoot: true and seccompProfile.type: RuntimeDefault; %s", whyRestricted)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		ps.add(path+".runAsNonRoot", msgNonRoot)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		ps.add(path+".runAsUser", msgRootUser)
	}
	if sc.SeccompProfile == nil || !slices.Contains(confinedProfiles, string(sc.SeccompProfile.Type)) {
		ps.add(path+".seccompProfile.type", msgSeccomp)
	}
	checkConfinement(ps, path, sc.SELinuxOptions, sc.WindowsOptions, sc.AppArmorProfile)
	for i, s := range sc.Sysctls {
		if !slices.Contains(safeSysctls, s.Name) {
			ps.add(fmt.Sprintf("%s.sysctls[%d].name", path, i), "%q %s", s.Name, msgSysctl)
		}
	}
}

// checkConfinement checks the SELinux, Windows and AppArmor settings that pod and container security
// contexts share.
func checkConfinement(ps *problems, path string, se *corev1.SELinuxOptions, win *corev1.WindowsSecurityContextOptions, aa *corev1.AppArmorProfile) {
	if se != nil {
		if !slices.Contains(safeSELinuxTypes, se.Type) {
			ps.add(path+".seLinuxOptions.type", "%q %s", se.Type, msgSELinuxType)
		}
		if se.User != "" {
			ps.add(path+".seLinuxOptions.user", msgSELinuxUser)
		}
		if se.Role != "" {
			ps.add(path+".seLinuxOptions.role", msgSELinuxUser)
		}
	}
	if win != nil && win.HostProcess != nil && *win.HostProcess {
		ps.add(path+".windowsOptions.hostProcess", msgHostProcess)
	}
	if aa != nil && !slices.Contains(confinedProfiles, string(aa.Type)) {
		ps.add(path+".appArmorProfile.type", msgAppArmor)
	}
}

// checkContainerSecurity keeps the worker container's security context within Pod Security "restricted".
func checkContainerSecurity(ps *problems, path string, sc *corev1.SecurityContext) {
	if sc == nil {
		ps.add(path, "must be set: allowPrivilegeEscalation: false and capabilities.drop: [ALL]; %s", whyRestricted)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		ps.add(path+".allowPrivilegeEscalation", msgEscalation)
	}
	if sc.Privileged != nil && *sc.Privileged {
		ps.add(path+".privileged", msgPrivileged)
	}
	dropsAll := false
	if sc.Capabilities != nil {
		dropsAll = slices.Contains(sc.Capabilities.Drop, "ALL")
		for i, c := range sc.Capabilities.Add {
			if c != "NET_BIND_SERVICE" {
				ps.add(fmt.Sprintf("%s.capabilities.add[%d]", path, i), "%q %s", c, msgCapAdd)
			}
		}
	}
	if !dropsAll {
		ps.add(path+".capabilities.drop", "must include ALL: %s", whyRestricted)
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		ps.add(path+".runAsNonRoot", msgNonRoot)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		ps.add(path+".runAsUser", msgRootUser)
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		ps.add(path+".procMount", msgProcMount)
	}
	if sc.SeccompProfile != nil && !slices.Contains(confinedProfiles, string(sc.SeccompProfile.Type)) {
		ps.add(path+".seccompProfile.type", msgSeccomp)
	}
	checkConfinement(ps, path, sc.SELinuxOptions, sc.WindowsOptions, sc.AppArmorProfile)
}
