// Package chart holds the chart's end-to-end tests against the local control plane (e2e/cluster): the
// rendered chart applied with server-side dry run, Pod Security "restricted" for the worker and script pods,
// RBAC proven with SubjectAccessReviews, install through the Helm SDK, and self-update.
package chart
