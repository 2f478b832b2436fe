package server

import (
	"github.com/octo-worker/octo-worker/dispatch/api"
)

// routeTable lists every endpoint. The mux, the OpenAPI document and PROTOCOL.md's table follow it.
func (s *Server) routeTable() []route {
	return []route{
		{method: "GET", pattern: "/healthz", auth: authPublic, handle: s.healthz, summary: "Liveness and store health (no auth)",
			response: map[string]string{}, status: 200},
		{method: "GET", pattern: "/api/v1/openapi.json", auth: authPublic, handle: s.openapi, summary: "This API as an OpenAPI 3.1 document (no auth)",
			response: map[string]any{}, status: 200},
		{method: "GET", pattern: "/metrics", auth: authPublic, handle: s.serveMetrics, summary: "Prometheus metrics, octo_dispatch_* (no auth: pool names and counts only)",
			rawResponse: "text/plain", status: 200},

		// admin: pools and registration tokens
		{method: "POST", pattern: "/api/v1/pools", auth: authAdmin, handle: s.createPool, summary: "Create a worker pool",
			request: api.CreatePoolRequest{}, response: api.Pool{}, status: 201, also: []int{409}},
		{method: "GET", pattern: "/api/v1/pools", auth: authAdmin, handle: s.listPools, summary: "List pools",
			response: api.PoolList{}, status: 200},
		{method: "POST", pattern: "/api/v1/tokens", auth: authAdmin, handle: s.createToken, summary: "Create a registration token scoped to pools (the secret is returned once)",
			request: api.CreateTokenRequest{}, response: api.RegistrationToken{}, status: 201},
		{method: "GET", pattern: "/api/v1/tokens", auth: authAdmin, handle: s.listTokens, summary: "List registration tokens (without secrets)",
			response: api.TokenList{}, status: 200},
		{method: "DELETE", pattern: "/api/v1/tokens/{id}", auth: authAdmin, handle: s.revokeToken, summary: "Revoke a registration token (workers already registered keep working)",
			response: api.RegistrationToken{}, status: 200, also: []int{404}},

		// admin: operations and deployments
		{method: "POST", pattern: "/api/v1/operations", auth: authAdmin, handle: s.submit, summary: "Submit an operation (one script step)",
			request: api.OperationSpec{}, response: api.Operation{}, status: 201, limit: operationBodyLimit},
		{method: "GET", pattern: "/api/v1/operations", auth: authAdmin, handle: s.listOperations, summary: "List operation summaries, newest first",
			response: api.OperationList{}, status: 200, query: []string{"state", "pool", "worker", "deployment", "limit"}},
		{method: "GET", pattern: "/api/v1/operations/{id}", auth: authAdmin, handle: s.getOperation, summary: "Show an operation (sensitive values masked)",
			response: api.Operation{}, status: 200, also: []int{404}},
		{method: "POST", pattern: "/api/v1/operations/{id}/cancel", auth: authAdmin, handle: s.cancelOperation,
			summary:  "Cancel: a queued operation at once; a leased or running one is asked to stop through its worker's heartbeat",
			response: api.Operation{}, status: 200, also: []int{404, 409}},
		{method: "GET", pattern: "/api/v1/operations/{id}/logs", auth: authAdmin, handle: s.followLogs,
			summary:  "Stored log lines after a position, as NDJSON api.LogEvent records; with follow=true waits for more and ends with the operation's end record",
			response: api.LogEvent{}, rawResponse: "application/x-ndjson", status: 200, also: []int{404}, query: []string{"after", "follow"}},
		{method: "POST", pattern: "/api/v1/deployments", auth: authAdmin, handle: s.deploy, summary: "Submit a deployment: ordered steps, each an operation",
			request: api.DeploymentSpec{}, response: api.Deployment{}, status: 201, limit: deploymentBodyLimit},
		{method: "GET", pattern: "/api/v1/deployments", auth: authAdmin, handle: s.listDeployments, summary: "List deployments, newest first",
			response: api.DeploymentList{}, status: 200, query: []string{"limit"}},
		{method: "GET", pattern: "/api/v1/deployments/{id}", auth: authAdmin, handle: s.getDeployment, summary: "Show a deployment and its steps",
			response: api.Deployment{}, status: 200, also: []int{404}},
		{method: "POST", pattern: "/api/v1/deployments/{id}/cancel", auth: authAdmin, handle: s.cancelDeployment,
			summary:  "Cancel a deployment: queued steps at once, the running step through its worker",
			response: api.Deployment{}, status: 200, also: []int{404, 409}},

		// admin: workers and versions
		{method: "GET", pattern: "/api/v1/workers", auth: authAdmin, handle: s.listWorkers, summary: "List registered workers with their state (healthy, unhealthy, unavailable, outdated)",
			response: api.WorkerList{}, status: 200},
		{method: "GET", pattern: "/api/v1/workers/{id}", auth: authAdmin, handle: s.getWorker, summary: "Show a worker: its state, every check of its last report and when it ran them",
			response: api.Worker{}, status: 200, also: []int{400, 404}},
		{method: "POST", pattern: "/api/v1/workers/{id}/check", auth: authAdmin, handle: s.checkWorker,
			summary:  "Run a health check on a worker now: a tiny script pod that only this worker takes, first, whatever its health; follow the returned operation. 409 when the worker is asked to drain or unavailable",
			response: api.Operation{}, status: 201, also: []int{400, 404, 409}},
		{method: "DELETE", pattern: "/api/v1/workers/{id}", auth: authAdmin, handle: s.removeWorker,
			summary:  "Remove a worker: its token stops working at once, the operations it held become lost (never re-run), it leaves the list",
			response: api.WorkerRemoval{}, status: 200, also: []int{400, 404}},
		{method: "POST", pattern: "/api/v1/workers/{id}/drain", auth: authAdmin, handle: s.drainWorker, summary: "Ask a worker to drain (stop taking operations) or to resume",
			request: api.DrainRequest{}, response: api.Worker{}, status: 200, also: []int{404}},
		{method: "PUT", pattern: "/api/v1/charts/{version}", auth: authAdmin, handle: s.putChart, summary: "Upload the chart archive (.tgz) of a worker version",
			rawRequest: "application/gzip", response: api.Chart{}, status: 200, limit: chartBodyLimit},
		{method: "GET", pattern: "/api/v1/charts/{version}", auth: authWorkerOrAdmin, handle: s.getChart, summary: "Download a chart archive (worker or admin token)",
			rawResponse: "application/gzip", status: 200, also: []int{404}},
		{method: "PUT", pattern: "/api/v1/version", auth: authAdmin, handle: s.setVersion, summary: "Set the worker version every worker should run (its chart must be uploaded)",
			request: api.DesiredVersion{}, response: api.DesiredVersion{}, status: 200},
		{method: "GET", pattern: "/api/v1/version", auth: authAdmin, handle: s.getVersion, summary: "Show the desired worker version",
			response: api.DesiredVersion{}, status: 200},

		// workers
		{method: "POST", pattern: "/api/v1/worker/register", auth: authRegistration, handle: s.register,
			summary: "Register a worker with a registration token; returns the worker token",
			request: api.RegisterRequest{}, response: api.RegisterResponse{}, status: 201},
		{method: "POST", pattern: "/api/v1/worker/lease", auth: authWorker, handle: s.lease,
			summary: "Long-poll for one operation (204 when none arrived within wait_seconds)",
			request: api.LeaseRequest{}, response: api.Lease{}, status: 200, also: []int{204, 429}},
		{method: "GET", pattern: "/api/v1/worker/leases", auth: authWorker, handle: s.leases, summary: "The live leases this worker holds (for re-adoption after a restart)",
			response: api.LeasesResponse{}, status: 200},
		{method: "POST", pattern: "/api/v1/worker/heartbeat", auth: authWorker, handle: s.heartbeat,
			summary: "Report state, renew the leases of running operations; the reply says what to cancel, whether to drain, the desired version",
			request: api.HeartbeatRequest{}, response: api.HeartbeatResponse{}, status: 200},
		{method: "POST", pattern: "/api/v1/worker/deregister", auth: authWorker, handle: s.deregister,
			summary:  "Remove this worker (uninstall): its token stops working at once, the operations it held become lost; a repeat gets 401",
			response: api.WorkerRemoval{}, status: 200},
		{method: "POST", pattern: "/api/v1/worker/operations/{id}/status", auth: authWorker, handle: s.status, summary: "Report that a leased operation is running",
			request: api.StatusRequest{}, response: api.Operation{}, status: 200, also: []int{403, 404, 410}},
		{method: "POST", pattern: "/api/v1/worker/operations/{id}/logs", auth: authWorker, handle: s.appendLogs,
			summary: "Append log lines (idempotent on seq >= 1; 409 log_conflict when a stored seq comes with another text); the reply has the highest contiguous seq and whether a gap exists",
			request: api.AppendLogsRequest{}, response: api.AppendLogsResponse{}, status: 200, also: []int{403, 404, 409, 410}, limit: logsBodyLimit},
		{method: "POST", pattern: "/api/v1/worker/operations/{id}/result", auth: authWorker, handle: s.result,
			summary: "End a leased operation (a retry of the same result is accepted); 409 missing_lines when lines are missing",
			request: api.ResultRequest{}, response: api.Operation{}, status: 200, also: []int{403, 404, 409, 410}},
	}
}
