// Package storetest is the conformance suite of the dispatch store: every driver runs Run against a real
// database, so the rules in package store hold whichever database sits behind the seam.
package storetest

import (
	"testing"

	"github.com/octo-worker/octo-worker/dispatch/store"
)

// Open returns a fresh, empty store for one test; the driver closes it in t.Cleanup.
type Open func(t *testing.T) store.Store

// Run runs the whole suite. Each case gets its own store and runs in parallel. The cases live beside the
// store interface they exercise: pools.go (Pools, Tokens), workers.go (Workers: heartbeat, removal),
// claim.go (enqueue and claim), profiles.go (pod profiles: what workers offer, who may claim), health.go (who
// may take work: capacity, drain, health, targeted operations), leases.go (what a lease allows, finish, cancel,
// expiry, reads), pod.go (the pod's token), logs.go, logmodel.go (appends against a model), loglimit.go, stats.go (QueueStats), deployments.go,
// settings.go, retention.go, usage.go and packages.go; bundle.go holds the helpers they share.
func Run(t *testing.T, open Open) {
	cases := []struct {
		name string
		fn   func(t *testing.T, b *bundle)
	}{
		{"Pools", testPools},
		{"Tokens", testTokens},
		{"Workers", testWorkers},
		{"TouchWorkers", testTouchWorkers},
		{"RemoveWorker", testRemoveWorker},
		{"RemoveWorkerStopsItsDeployment", testRemoveWorkerDeployment},
		{"RemovedWorkerLeasesNothing", testRemovedWorkerLeasesNothing},
		{"ClaimOrderAndPools", testClaimOrderAndPools},
		{"ClaimCapabilities", testClaimCapabilities},
		{"ProfilesStored", testProfilesStored},
		{"ClaimProfiles", testClaimProfiles},
		{"ClaimRequestIDReplay", testClaimRequestID},
		{"ClaimExactlyOnceConcurrently", testClaimConcurrent},
		{"CreateLeasedOperation", testCreateLeased},
		{"Capacity", testCapacity},
		{"WhoTakesWork", testWhoTakesWork},
		{"Targeted", testTargeted},
		{"HealthReport", testHealthReport},
		{"EnqueueUnknownPool", testEnqueueUnknownPool},
		{"SensitiveValues", testSensitiveValues},
		{"LeaseChecks", testLeaseChecks},
		{"SetRunning", testSetRunning},
		{"AppendLogs", testAppendLogs},
		{"AppendLogsConflict", testAppendLogsConflict},
		{"AppendLogsModel", testAppendLogsModel},
		{"LogLimit", testLogLimit},
		{"LogLimitUnderIt", testLogLimitUnderIt},
		{"Finish", testFinish},
		{"Cancel", testCancel},
		{"Heartbeat", testHeartbeat},
		{"ExpireLeases", testExpireLeases},
		{"ExpireLeasesConcurrently", testExpireLeasesConcurrently},
		{"DeploymentSucceeds", testDeploymentSucceeds},
		{"DeploymentStopsOnFailure", testDeploymentStopsOnFailure},
		{"DeploymentCancel", testDeploymentCancel},
		{"DeploymentLostStep", testDeploymentLostStep},
		{"Leases", testLeases},
		{"PodLease", testPodLease},
		{"PodEnd", testPodEnd},
		{"ListOperations", testListOperations},
		{"QueueStats", testQueueStats},
		{"SettingsAndCharts", testSettingsAndCharts},
		{"Retention", testRetention},
		{"RetentionBatches", testRetentionBatches},
		{"UsageSamples", testUsageSamples},
		{"Packages", testPackages},
		{"OperationPackages", testOperationPackages},
		{"PackageRetention", testPackageRetention},
		{"Sessions", testSessions},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, setup(t, open))
		})
	}
}
