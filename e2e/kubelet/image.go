package kubelet

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Image is what an image name means on this node: a root filesystem and files bound into it.
type Image struct {
	// Root is the host directory used as the container's root filesystem (read-only lower layer of an
	// overlay, so writes stay private to the container). "" means the host's own root.
	Root string
	// Files maps a path inside the container to a host file, bound in read-only (e.g. the worker image
	// carries "/usr/local/bin/octo-worker").
	Files map[string]string
}

// DefaultPullFailurePatterns are the image names that fail to pull when Config.PullFailurePatterns is nil:
// everything under the registry "pull-fails.invalid".
var DefaultPullFailurePatterns = []string{"pull-fails.invalid/*"}

// The grammar of an image reference, after github.com/distribution/reference (the kubelet parses image
// names with it and reports InvalidImageName when it fails).
var referenceRE = func() *regexp.Regexp {
	domainComponent := `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	domain := domainComponent + `(?:\.` + domainComponent + `)*(?::[0-9]+)?`
	pathComponent := `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	name := `(?:` + domain + `/)?` + pathComponent + `(?:/` + pathComponent + `)*`
	tag := `[\w][\w.-]{0,127}`
	digest := `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
	return regexp.MustCompile(`^(` + name + `)(?::(` + tag + `))?(?:@(` + digest + `))?$`)
}()

// validateImageName reports why name is not a valid image reference, or nil.
func validateImageName(name string) error {
	if name == "" {
		return fmt.Errorf("image name is empty")
	}
	m := referenceRE.FindStringSubmatch(name)
	if m == nil {
		return fmt.Errorf("couldn't parse image name %q: invalid reference format", name)
	}
	if len(m[1]) > 255 {
		return fmt.Errorf("couldn't parse image name %q: repository name must not be more than 255 characters", name)
	}
	return nil
}

// globMatcher matches image names against patterns in which "*" stands for any run of characters
// (including "/").
type globMatcher []*regexp.Regexp

func newGlobMatcher(patterns []string) globMatcher {
	var g globMatcher
	for _, p := range patterns {
		parts := strings.Split(p, "*")
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		g = append(g, regexp.MustCompile("^"+strings.Join(parts, ".*")+"$"))
	}
	return g
}

func (g globMatcher) match(name string) bool {
	for _, re := range g {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// pullImage simulates pulling the container's image: invalid names and names matching the pull-failure
// patterns never succeed. It returns false when ctx ended first.
func (w *podWorker) pullImage(ctx context.Context, c *corev1.Container, cs *ctrState, fp string) bool {
	ref := w.ref(fp)
	if err := validateImageName(c.Image); err != nil {
		msg := fmt.Sprintf("Failed to apply default image tag %q: %v", c.Image, err)
		w.node.recorder.Event(ref, corev1.EventTypeWarning, "InspectFailed", msg)
		w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: InvalidImageName")
		w.setWaiting(cs, "InvalidImageName", msg)
		<-ctx.Done()
		return false
	}
	if w.node.pullFails.match(c.Image) {
		delay := 10 * time.Second
		for {
			w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
			msg := fmt.Sprintf("failed to pull and unpack image %q: failed to resolve reference %q: not found (simulated by the octo process node)", c.Image, c.Image)
			w.node.recorder.Eventf(ref, corev1.EventTypeWarning, "Failed", "Failed to pull image %q: %s", c.Image, msg)
			w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
			w.setWaiting(cs, "ErrImagePull", msg)
			if !sleepCtx(ctx, time.Second) {
				return false
			}
			w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.Image)
			w.node.recorder.Event(ref, corev1.EventTypeWarning, "Failed", "Error: ImagePullBackOff")
			w.setWaiting(cs, "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", c.Image, msg))
			if !sleepCtx(ctx, delay) {
				return false
			}
			delay = min(delay*2, 5*time.Minute)
		}
	}
	if c.ImagePullPolicy == corev1.PullAlways {
		w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
		w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in 0s", c.Image)
	} else {
		w.node.recorder.Eventf(ref, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
	}
	return true
}
