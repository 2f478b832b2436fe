-- The script pod's own channel to the server (PROTOCOL.md, "The script pod's channel"). Leasing an operation
-- mints a pod token, kept only as its SHA-256 (hex), and the operation's sealing key, kept so that the server
-- can open the sealed lines the pod pushes. Both are erased when the operation ends, with its sensitive
-- values. pod_eos_seq and pod_exit_code are the runner's end-of-stream marker once the pod pushed it: the
-- worker learns it from the append reply when the kubelet no longer has it.
ALTER TABLE operations ADD COLUMN pod_token_hash TEXT;
ALTER TABLE operations ADD COLUMN sealing_key BLOB;
ALTER TABLE operations ADD COLUMN pod_eos_seq INTEGER;
ALTER TABLE operations ADD COLUMN pod_exit_code INTEGER;
CREATE UNIQUE INDEX operations_pod_token ON operations (pod_token_hash) WHERE pod_token_hash IS NOT NULL;
