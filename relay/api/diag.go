package api

import "time"

// DiagInfo is the body of GET /v1/diag/info: the answering node, its
// runtime, and its configuration with every secret replaced by
// Redacted.
type DiagInfo struct {
	NodeID     string         `json:"node_id"`
	Version    string         `json:"version"`
	GoVersion  string         `json:"go_version"`
	OS         string         `json:"os"`
	Arch       string         `json:"arch"`
	StartedAt  time.Time      `json:"started_at"`
	Goroutines int            `json:"goroutines"`
	Store      string         `json:"store"`
	Cluster    bool           `json:"cluster"`
	Config     map[string]any `json:"config"`
}

// Redacted stands for a secret in diagnostics and support bundles.
const Redacted = "[REDACTED]"
