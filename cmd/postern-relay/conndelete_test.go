package main

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
)

// deletingRelay serves the calls connections delete makes: it holds one
// active and one revoked connection, and deletes only the revoked one.
func deletingRelay(t *testing.T) *harness {
	t.Helper()
	var mu sync.Mutex
	conns := map[string]api.Connection{
		"conn_active": {ID: "conn_active", Name: "gitlab", Workspace: "acme", CreatedAt: t0},
		"conn_old":    {ID: "conn_old", Name: "jira", Workspace: "acme", CreatedAt: t0, RevokedAt: new(t0.Add(time.Hour))},
	}
	notFound := func(w http.ResponseWriter, id string) {
		writeJSON(w, http.StatusNotFound, api.Error{Reason: protocol.ConnectionNotFound, Message: `no connection "` + id + `"`, RequestID: "r1"})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/connections/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := conns[r.PathValue("id")]; ok {
			writeJSON(w, http.StatusOK, c)
			return
		}
		notFound(w, r.PathValue("id"))
	})
	mux.HandleFunc("DELETE /v1/connections/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		c, ok := conns[r.PathValue("id")]
		switch {
		case !ok:
			notFound(w, r.PathValue("id"))
		case c.RevokedAt == nil:
			writeJSON(w, http.StatusConflict, api.Error{Reason: protocol.NotRevoked,
				Message: "revoke the connection first: postern-relay connections revoke " + c.ID, RequestID: "r2"})
		default:
			delete(conns, c.ID)
			w.WriteHeader(http.StatusNoContent)
		}
	})
	return serveHarness(t, mux)
}

func TestConnectionsDelete(t *testing.T) {
	h := deletingRelay(t)

	_, _, err := h.run(t, "connections", "delete", "conn_active")
	require.Error(t, err)
	assert.Equal(t, "CONNECTION_NOT_REVOKED: revoke the connection first: postern-relay connections revoke conn_active", err.Error())

	out, _, err := h.run(t, "connections", "delete", "conn_old")
	require.NoError(t, err)
	assert.Equal(t, "Deleted connection conn_old (jira).\n", out)

	_, _, err = h.run(t, "connections", "delete", "conn_old")
	require.Error(t, err)
	assert.Equal(t, `CONNECTION_NOT_FOUND: no connection "conn_old"`, err.Error(), "deleted once")
}

func TestConnectionsDeleteJSON(t *testing.T) {
	h := deletingRelay(t)
	out, _, err := h.run(t, "connections", "delete", "conn_old", "--json")
	require.NoError(t, err)
	var got api.Connection
	decodeOne(t, out, &got)
	assert.Equal(t, "conn_old", got.ID, "the connection as it was when deleted")
	assert.Equal(t, "jira", got.Name)
	require.NotNil(t, got.RevokedAt)
}
