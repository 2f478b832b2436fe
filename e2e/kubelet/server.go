package kubelet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"time"
)

// handler serves the part of the kubelet API this node supports: GET /containerLogs/{ns}/{pod}/{container}.
func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", n.serveLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("%s is not supported by the octo process node (only /containerLogs is)", r.URL.Path), http.StatusNotFound)
	})
	return mux
}

func (n *Node) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, podName, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, previous, err := parseLogOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pw := n.worker(ns, podName)
	if pw == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on node %s", ns, podName, n.cfg.Name), http.StatusNotFound)
		return
	}
	clog := pw.containerLog(container, previous)
	if clog == nil {
		msg := fmt.Sprintf("container %q in pod %q has no logs yet", container, podName)
		if previous {
			msg = fmt.Sprintf("previous terminated container %q in pod %q not found", container, podName)
		}
		http.Error(w, msg, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	if err := clog.read(r.Context(), w, opts, flush); err != nil {
		n.log.WithError(err).Debug("serving container logs")
	}
}

// containerLog returns the log of the container's current run (or the previous one).
func (w *podWorker) containerLog(name string, previous bool) *containerLog {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range append(append([]*ctrState{}, w.st.init...), w.st.ctrs...) {
		if c.status.Name != name {
			continue
		}
		i := len(c.logs) - 1
		if previous {
			i--
		}
		if i < 0 {
			return nil
		}
		return c.logs[i]
	}
	return nil
}

// parseLogOptions reads the kubelet's log query parameters; errors name the parameter.
func parseLogOptions(r *http.Request) (logOptions, bool, error) {
	q := r.URL.Query()
	var o logOptions
	boolean := func(name string) (bool, error) {
		v := q.Get(name)
		if v == "" {
			return false, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("query parameter %s=%q: use true or false", name, v)
		}
		return b, nil
	}
	integer := func(name string) (*int64, error) {
		v := q.Get(name)
		if v == "" {
			return nil, nil
		}
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil || i < 0 {
			return nil, fmt.Errorf("query parameter %s=%q: use a non-negative integer", name, v)
		}
		return &i, nil
	}
	var err error
	if o.follow, err = boolean("follow"); err != nil {
		return o, false, err
	}
	if o.timestamps, err = boolean("timestamps"); err != nil {
		return o, false, err
	}
	previous, err := boolean("previous")
	if err != nil {
		return o, false, err
	}
	if o.tailLines, err = integer("tailLines"); err != nil {
		return o, false, err
	}
	if o.limitBytes, err = integer("limitBytes"); err != nil {
		return o, false, err
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return o, false, fmt.Errorf("query parameter sinceTime=%q: use RFC 3339 (2006-01-02T15:04:05Z)", v)
		}
		o.since = t
	}
	secs, err := integer("sinceSeconds")
	if err != nil {
		return o, false, err
	}
	if secs != nil {
		o.since = time.Now().Add(-time.Duration(*secs) * time.Second)
	}
	switch s := q.Get("stream"); s {
	case "", "All":
	case "Stdout":
		o.stream = "stdout"
	case "Stderr":
		o.stream = "stderr"
	default:
		return o, false, fmt.Errorf("query parameter stream=%q: use All, Stdout or Stderr", s)
	}
	return o, previous, nil
}

// selfSigned makes a serving certificate for 127.0.0.1 when the node was given none.
func selfSigned(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating kubelet serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{name, "localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating kubelet serving certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
