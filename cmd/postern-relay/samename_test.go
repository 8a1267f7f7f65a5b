package main

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/relay/api"
)

// TestConnectionsCreateWarnings: the relay's warnings go to stderr, one
// "warning: " line each, in text and JSON modes alike; stdout keeps the
// answer alone.
func TestConnectionsCreateWarnings(t *testing.T) {
	const warning = `a connection named "gitlab" already exists in workspace acme (id conn_1); names are labels, the id is what the product uses`
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/connections", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusCreated, api.Connection{ID: "conn_2", Name: "gitlab", Workspace: "acme", CreatedAt: t0,
			AgentToken: "pat_tok", Warnings: []string{warning, "second\x1b[2Jline"}})
	})
	h := serveHarness(t, mux)
	want := "warning: " + warning + "\nwarning: second?[2Jline\n"

	out, stderr, err := h.run(t, "connections", "create", "gitlab", "--workspace", "acme")
	require.NoError(t, err)
	assert.Equal(t, want, stderr, "each warning on its line, control characters cleaned")
	assert.NotContains(t, out, "warning")
	assert.Contains(t, out, "agent token: pat_tok\n")

	out, stderr, err = h.run(t, "connections", "create", "gitlab", "--workspace", "acme", "--json")
	require.NoError(t, err)
	assert.Equal(t, want, stderr)
	var got api.Connection
	decodeOne(t, out, &got)
	assert.Equal(t, "pat_tok", got.AgentToken)
	assert.Len(t, got.Warnings, 2, "the JSON is the API's answer, warnings included")
}
