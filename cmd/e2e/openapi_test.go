package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// openAPI is relay/api/openapi.yaml, read as plain data, and a checker
// for the subset of JSON Schema 2020-12 the document uses: $ref, type
// (one or a list), properties, required, additionalProperties (false or a
// schema), items, enum, format date-time. A keyword outside that subset
// fails the test, so the document cannot use one this checker would
// silently skip.
type openAPI struct{ doc map[string]any }

func loadOpenAPI(t *testing.T) *openAPI {
	t.Helper()
	data, err := os.ReadFile("../../relay/api/openapi.yaml")
	require.NoError(t, err)
	o := &openAPI{}
	require.NoError(t, yaml.Unmarshal(data, &o.doc))
	return o
}

// resolve follows a local $ref.
func (o *openAPI) resolve(node map[string]any) map[string]any {
	for {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		var target any = o.doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			target = target.(map[string]any)[part]
		}
		node = target.(map[string]any)
	}
}

var annotations = map[string]bool{"description": true, "example": true, "examples": true, "title": true}

// validate checks v (decoded JSON) against schema and returns every
// mismatch, each with its JSON path.
func (o *openAPI) validate(schema map[string]any, v any, path string) []string {
	schema = o.resolve(schema)
	var errs []string
	for k := range schema {
		switch k {
		case "type", "properties", "required", "additionalProperties", "items", "enum", "format":
		default:
			if !annotations[k] {
				errs = append(errs, path+": schema keyword "+k+" is outside the checked subset")
			}
		}
	}
	if t, ok := schema["type"]; ok && !typeMatches(t, v) {
		return append(errs, fmt.Sprintf("%s: %v is not of type %v", path, v, t))
	}
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, v) {
		errs = append(errs, fmt.Sprintf("%s: %v is not one of %v", path, v, enum))
	}
	if schema["format"] == "date-time" {
		if _, err := time.Parse(time.RFC3339Nano, v.(string)); err != nil {
			errs = append(errs, path+": not a date-time")
		}
	}
	switch v := v.(type) {
	case map[string]any:
		errs = append(errs, o.validateObject(schema, v, path)...)
	case []any:
		if items, ok := schema["items"].(map[string]any); ok {
			for i, e := range v {
				errs = append(errs, o.validate(items, e, path+"["+strconv.Itoa(i)+"]")...)
			}
		}
	}
	return errs
}

func (o *openAPI) validateObject(schema, v map[string]any, path string) []string {
	var errs []string
	props, _ := schema["properties"].(map[string]any)
	for _, r := range asList(schema["required"]) {
		if _, ok := v[r.(string)]; !ok {
			errs = append(errs, path+": required "+r.(string)+" missing")
		}
	}
	for k, e := range v {
		switch p, ok := props[k].(map[string]any); {
		case ok:
			errs = append(errs, o.validate(p, e, path+"."+k)...)
		case schema["additionalProperties"] == false:
			errs = append(errs, path+": "+k+" is not in the schema")
		default:
			if extra, ok := schema["additionalProperties"].(map[string]any); ok {
				errs = append(errs, o.validate(extra, e, path+"."+k)...)
			}
		}
	}
	return errs
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func typeMatches(t, v any) bool {
	for _, name := range append(asList(t), t) {
		switch name {
		case "object":
			_, ok := v.(map[string]any)
			return ok
		case "array":
			_, ok := v.([]any)
			return ok
		case "string":
			_, ok := v.(string)
			return ok
		case "boolean":
			_, ok := v.(bool)
			return ok
		case "integer":
			n, ok := v.(float64)
			return ok && n == float64(int64(n))
		case "number":
			_, ok := v.(float64)
			return ok
		case "null":
			return v == nil
		}
	}
	return false
}

// operation returns the documented operation of method and pattern.
func (o *openAPI) operation(method, pattern string) map[string]any {
	item, _ := o.doc["paths"].(map[string]any)[pattern].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	return op
}

// checkAnswer holds one real answer against the document: its status is
// documented for the operation, and its JSON body matches that status's
// schema.
func (o *openAPI) checkAnswer(t *testing.T, method, pattern string, resp *http.Response, body []byte) {
	t.Helper()
	op := o.operation(method, pattern)
	require.NotNil(t, op, "%s %s is not documented", method, pattern)
	doc, ok := op["responses"].(map[string]any)[strconv.Itoa(resp.StatusCode)].(map[string]any)
	require.True(t, ok, "%s %s answered %d, which is not documented: %s", method, pattern, resp.StatusCode, body)
	doc = o.resolve(doc)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	content, _ := doc["content"].(map[string]any)
	if len(content) == 0 {
		return
	}
	media, ok := content[mt].(map[string]any)
	require.True(t, ok, "%s %s %d: content type %q is not documented", method, pattern, resp.StatusCode, mt)
	if mt != "application/json" {
		return
	}
	var v any
	require.NoError(t, json.Unmarshal(body, &v), "%s", body)
	errs := o.validate(media["schema"].(map[string]any), v, "$")
	assert.Empty(t, errs, "%s %s %d: %s", method, pattern, resp.StatusCode, body)
	if resp.StatusCode >= 400 {
		assert.NotEmpty(t, resp.Header.Get("Postern-Reason"), "error answers carry Postern-Reason")
		assert.NotEmpty(t, resp.Header.Get("Postern-Request-Id"))
	}
}

// TestOpenAPIAgainstARealNode sends every documented call, in success and
// in refusal, to a relay node with a connected agent, and holds each
// answer against the document.
func TestOpenAPIAgainstARealNode(t *testing.T) {
	o := loadOpenAPI(t)
	r := startRelay(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	admin := adminKey(t, r)
	conn, err := r.admin.CreateConnection(t.Context(), "openapi", "acme")
	require.NoError(t, err)
	never, err := r.admin.CreateConnection(t.Context(), "never", "acme")
	require.NoError(t, err)
	revoked, err := r.admin.CreateConnection(t.Context(), "revoked then deleted", "acme")
	require.NoError(t, err)
	target := httpTarget(t)
	startAgent(t, r, conn.AgentToken, fmt.Sprintf("allow:\n  - ip: 127.0.0.1\n    ports: [%d]\n", target.port), nil)
	waitStatus(t, r.admin, conn.ID, func(st api.Status) bool { return st.TunnelStatus == "connected" && len(st.Agents) > 0 })
	wsKey, err := r.admin.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "ws", Workspace: "acme"})
	require.NoError(t, err)
	doomed, err := r.admin.CreateAPIKey(t.Context(), api.CreateAPIKeyRequest{Name: "doomed", Workspace: "acme"})
	require.NoError(t, err)
	inAYear := time.Now().Add(365 * 24 * time.Hour).UTC().Format(time.RFC3339)

	calls := []struct {
		method, pattern, path, key, body string
		status                           int
	}{
		{"GET", "/healthz", "/healthz", "", "", 200},
		{"GET", "/readyz", "/readyz", "", "", 200},
		{"GET", "/metrics", "/metrics", "", "", 200},
		{"GET", "/v1/tunnel", "/v1/tunnel", "", "", 401},
		{"POST", "/v1/connections", "/v1/connections", admin, `{"name":"x","workspace":"acme"}`, 201},
		{"POST", "/v1/connections", "/v1/connections", admin, `{"name":""}`, 400},
		{"POST", "/v1/connections", "/v1/connections", wsKey.Key, `{"name":"x"}`, 403},
		{"POST", "/v1/connections", "/v1/connections", "", `{"name":"x"}`, 401},
		{"POST", "/v1/connections", "/v1/connections", admin, `{"name":"openapi","workspace":"acme"}`, 201}, // warns of the same name
		{"GET", "/v1/connections", "/v1/connections", wsKey.Key, "", 200},
		{"GET", "/v1/connections/{id}", "/v1/connections/" + conn.ID, admin, "", 200},
		{"GET", "/v1/connections/{id}", "/v1/connections/conn_nope", admin, "", 404},
		{"GET", "/v1/connections/{id}/status", "/v1/connections/" + conn.ID + "/status", wsKey.Key, "", 200},
		{"GET", "/v1/connections/{id}/status", "/v1/connections/" + conn.ID + "/status?base_url=" + target.url, admin, "", 200},
		{"GET", "/v1/connections/{id}/status", "/v1/connections/" + never.ID + "/status", admin, "", 200},
		{"GET", "/v1/connections/{id}/status", "/v1/connections/" + conn.ID + "/status?base_url=ftp://x", admin, "", 400},
		{"POST", "/v1/connections/{id}/check", "/v1/connections/" + conn.ID + "/check", admin, `{"base_url":"` + target.url + `"}`, 200},
		{"POST", "/v1/connections/{id}/check", "/v1/connections/" + never.ID + "/check", admin, `{"base_url":"` + target.url + `"}`, 502},
		{"POST", "/v1/api-keys", "/v1/api-keys", admin, `{"name":"k","workspace":"acme"}`, 201},
		{"POST", "/v1/api-keys", "/v1/api-keys", wsKey.Key, `{"name":"k","admin":true}`, 403},
		{"POST", "/v1/api-keys", "/v1/api-keys", admin, `{"name":"k","workspace":"acme","expires_at":"` + inAYear + `"}`, 201},
		{"POST", "/v1/api-keys", "/v1/api-keys", admin, `{"name":"k","workspace":"acme","expires_at":"2020-01-01T00:00:00Z"}`, 400},
		{"GET", "/v1/api-keys", "/v1/api-keys", admin, "", 200},
		{"GET", "/v1/api-keys", "/v1/api-keys", wsKey.Key, "", 403},
		{"POST", "/v1/api-keys/{id}/revoke", "/v1/api-keys/" + doomed.ID + "/revoke", wsKey.Key, "", 403},
		{"POST", "/v1/api-keys/{id}/revoke", "/v1/api-keys/" + doomed.ID + "/revoke", admin, "", 200},
		{"POST", "/v1/api-keys/{id}/revoke", "/v1/api-keys/nope/revoke", admin, "", 404},
		{"GET", "/v1/connections", "/v1/connections", doomed.Key, "", 401},
		{"POST", "/v1/connections/{id}/tokens", "/v1/connections/" + never.ID + "/tokens", admin, "", 201},
		{"POST", "/v1/connections/{id}/revoke", "/v1/connections/" + never.ID + "/revoke", admin, "", 200},
		{"POST", "/v1/connections/{id}/revoke", "/v1/connections/" + never.ID + "/revoke", wsKey.Key, "", 403},
		{"POST", "/v1/connections/{id}/tokens", "/v1/connections/" + never.ID + "/tokens", admin, "", 403},
		{"DELETE", "/v1/connections/{id}", "/v1/connections/" + revoked.ID, admin, "", 409},
		{"DELETE", "/v1/connections/{id}", "/v1/connections/" + revoked.ID, wsKey.Key, "", 403},
		{"POST", "/v1/connections/{id}/revoke", "/v1/connections/" + revoked.ID + "/revoke", admin, "", 200},
		{"DELETE", "/v1/connections/{id}", "/v1/connections/" + revoked.ID, admin, "", 204},
		{"DELETE", "/v1/connections/{id}", "/v1/connections/" + revoked.ID, admin, "", 404},
		{"GET", "/v1/events", "/v1/events?connection_id=conn_nope", admin, "", 404},
		{"POST", "/v1/connections/{id}/tokens", "/v1/connections/" + conn.ID + "/tokens", admin, `{"expire_previous":true}`, 201},
		{"POST", "/v1/connections/{id}/tokens", "/v1/connections/" + conn.ID + "/tokens", admin, `{"expire_later":true}`, 400},
		{"GET", "/v1/nodes", "/v1/nodes", admin, "", 200},
		{"GET", "/v1/nodes", "/v1/nodes", wsKey.Key, "", 403},
		{"GET", "/v1/connections/{id}/history", "/v1/connections/" + conn.ID + "/history", wsKey.Key, "", 200},
		{"GET", "/v1/connections/{id}/history", "/v1/connections/" + conn.ID + "/history?limit=0", admin, "", 400},
		{"GET", "/v1/connections/{id}/history", "/v1/connections/conn_nope/history", admin, "", 404},
		{"GET", "/v1/diag/{part}", "/v1/diag/info", admin, "", 200},
		{"GET", "/v1/diag/{part}", "/v1/diag/logs", admin, "", 200},
		{"GET", "/v1/diag/{part}", "/v1/diag/heap", admin, "", 200},
		{"GET", "/v1/diag/{part}", "/v1/diag/info", wsKey.Key, "", 403},
		{"GET", "/v1/diag/{part}", "/v1/diag/nope", admin, "", 400},
	}
	for _, c := range calls {
		t.Run(fmt.Sprintf("%s %s %d", c.method, c.path, c.status), func(t *testing.T) {
			resp, body := call(t, r, c.method, c.path, c.key, c.body)
			assert.Equal(t, c.status, resp.StatusCode, "%s", body)
			o.checkAnswer(t, c.method, c.pattern, resp, body)
		})
	}
	t.Run("event stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.apiAddr+"/v1/events", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		o.checkAnswer(t, "GET", "/v1/events", resp, nil)
	})
	t.Run("the checker refuses what the schema does not allow", func(t *testing.T) {
		schema := map[string]any{"$ref": "#/components/schemas/Error"}
		assert.Len(t, o.validate(schema, map[string]any{"reason": "NOPE", "extra": 1, "retry_after": 1.5}, "$"), 5,
			"an unknown reason, an unknown field, a fraction, and the two required fields missing")
	})
	t.Run("every documented route is served", func(t *testing.T) {
		for pattern, item := range o.doc["paths"].(map[string]any) {
			for method := range item.(map[string]any) {
				if method == "parameters" {
					continue
				}
				path := strings.ReplaceAll(pattern, "{id}", conn.ID+"x")
				resp, body := call(t, r, strings.ToUpper(method), path, "", "")
				assert.NotEqual(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s", method, pattern)
				assert.False(t, resp.StatusCode == http.StatusNotFound && resp.Header.Get("Postern-Reason") == "",
					"%s %s is not routed: %s", method, pattern, body)
			}
		}
	})
}

func adminKey(t *testing.T, r *testRelay) string {
	t.Helper()
	return testkit.AdminKey(t, r.dataDir)
}

// call sends one API request and returns the answer and its body.
func call(t *testing.T, r *testRelay, method, path, key, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+r.apiAddr+path, bytes.NewBufferString(body))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	require.NoError(t, err)
	return resp, data
}

type target struct {
	url  string
	port int
}

// httpTarget is a plain HTTP service on loopback for live checks.
func httpTarget(t *testing.T) target {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}), ReadHeaderTimeout: 5 * time.Second}
	ln := listenRetry(t, "127.0.0.1:0")
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(interface{ String() string }).String()
	p, _ := strconv.Atoi(port[strings.LastIndex(port, ":")+1:])
	return target{url: "http://127.0.0.1:" + strconv.Itoa(p), port: p}
}
