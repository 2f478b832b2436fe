// Package chart holds the chart's end-to-end tests against the local control plane (e2e/cluster): the
// rendered chart applied with server-side dry run, Pod Security "restricted" for the worker and script pods,
// RBAC proven with SubjectAccessReviews and with the upstream `kubectl auth can-i`, the upstream `helm lint
// --strict` and `helm template` agreeing byte for byte with `octo-worker chartgen render` on every example
// values file, `octo-worker install --apply` with the worker pod running in the cluster against a real
// dispatch server, and self-update from version A to B (with operations in flight that A starts and B
// re-adopts and finishes, and a failed upgrade that leaves A running and re-adopting them).
//
// TestMain builds the octo-worker binary twice, as versions A (the embedded chart's appVersion) and B, and the
// process node maps the images octo-worker:A and octo-worker:B to them; it ignores $OCTO_BINARY, whose version
// is not under the tests' control. The upstream helm and kubectl come from $OCTO_HELM and $OCTO_KUBECTL
// (`make clis`; `make e2e` sets both). The tools image sees a host directory as /etc/octo-gates, so that a
// test decides when a gated script may end (see gate). Run with `go test -p 1 ./e2e/chart/`.
package chart
