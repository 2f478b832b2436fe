package chartgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/kube"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// restGetter hands Helm a fixed *rest.Config (from a kubeconfig, the pod's service account, or a test cluster).
type restGetter struct {
	cfg       *rest.Config
	namespace string
}

func (g restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.cfg), nil }

func (g restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(rest.CopyConfig(g.cfg))
	if err != nil {
		return nil, fmt.Errorf("creating discovery client: %w", err)
	}
	return memory.NewMemCacheClient(dc), nil
}

func (g restGetter) ToRESTMapper() (meta.RESTMapper, error) {
	dc, err := g.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	return restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(dc), dc, nil), nil
}

// ToRawKubeConfigLoader only supplies the default namespace: the connection comes from cfg.
func (g restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	c := clientcmdapi.NewConfig()
	c.Contexts["release"] = &clientcmdapi.Context{Namespace: g.namespace}
	c.CurrentContext = "release"
	return clientcmd.NewDefaultClientConfig(*c, &clientcmd.ConfigOverrides{})
}

// HelmConfig returns a Helm action configuration that talks to the cluster behind cfg and keeps release
// records as Secrets in namespace (Helm's default storage).
func HelmConfig(cfg *rest.Config, namespace string, log logrus.FieldLogger) (*action.Configuration, error) {
	ac := new(action.Configuration)
	debug := func(format string, args ...any) { log.Debugf(format, args...) }
	if err := ac.Init(restGetter{cfg: cfg, namespace: namespace}, namespace, "secret", debug); err != nil {
		return nil, fmt.Errorf("initialising Helm: %w", err)
	}
	// Objects without a namespace go to the release namespace (Helm otherwise asks the kubeconfig).
	if kc, ok := ac.KubeClient.(*kube.Client); ok {
		kc.Namespace = namespace
	}
	return ac, nil
}

// ApplyOptions say how Apply installs or upgrades a release.
type ApplyOptions struct {
	Release         string
	Namespace       string
	CreateNamespace bool          // create the namespace on first install
	Wait            bool          // wait until the worker is ready
	Atomic          bool          // roll back (or uninstall a first install) when it fails; implies Wait
	Timeout         time.Duration // for Wait; default 5 minutes
}

// Apply installs the release, or upgrades it when it exists (helm upgrade --install), with the user's values
// (Loaded.User): helm stores exactly these as the release's values, the chart's values.yaml supplies the rest,
// and the release's previous values are not reused.
func Apply(ctx context.Context, hc *action.Configuration, ch *chart.Chart, vals map[string]any, o ApplyOptions) (*release.Release, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	hist := action.NewHistory(hc)
	hist.Max = 1
	_, err := hist.Run(o.Release)
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		inst := action.NewInstall(hc)
		inst.ReleaseName = o.Release
		inst.Namespace = o.Namespace
		inst.CreateNamespace = o.CreateNamespace
		inst.Wait = o.Wait
		inst.Atomic = o.Atomic
		inst.Timeout = o.Timeout
		rel, err := inst.RunWithContext(ctx, ch, vals)
		if err != nil {
			return rel, fmt.Errorf("installing release %s/%s: %w", o.Namespace, o.Release, err)
		}
		return rel, nil
	case err != nil:
		return nil, fmt.Errorf("reading release history of %s/%s: %w", o.Namespace, o.Release, err)
	}
	up := action.NewUpgrade(hc)
	up.Namespace = o.Namespace
	up.Wait = o.Wait
	up.Atomic = o.Atomic
	up.Timeout = o.Timeout
	up.MaxHistory = 10
	rel, err := up.RunWithContext(ctx, o.Release, ch, vals)
	if err != nil {
		return rel, fmt.Errorf("upgrading release %s/%s: %w", o.Namespace, o.Release, err)
	}
	return rel, nil
}
