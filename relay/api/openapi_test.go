package api_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/protocol"
)

// loadOpenAPI reads openapi.yaml as plain data.
func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile("openapi.yaml")
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(data, &doc))
	return doc
}

func dig(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := v.(map[string]any)
		require.True(t, ok, "%s is not an object", k)
		v = m[k]
	}
	return v
}

func sortedStrings(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	slices.Sort(out)
	return out
}

func TestOpenAPIIsThreeOne(t *testing.T) {
	doc := loadOpenAPI(t)
	assert.True(t, strings.HasPrefix(doc["openapi"].(string), "3.1."), "OpenAPI 3.1 (JSON Schema 2020-12)")
}

// TestOpenAPIReasons: the document names every reason code and provider
// code of protocol's table, and nothing else.
func TestOpenAPIReasons(t *testing.T) {
	doc := loadOpenAPI(t)
	var reasons, codes []string
	for _, info := range protocol.Reasons() {
		reasons = append(reasons, string(info.Reason))
		if info.ProviderErrorCode != "" && !slices.Contains(codes, info.ProviderErrorCode) {
			codes = append(codes, info.ProviderErrorCode)
		}
	}
	slices.Sort(reasons)
	slices.Sort(codes)
	assert.Equal(t, reasons, sortedStrings(dig(t, doc, "components", "schemas", "Reason", "enum")))
	assert.Equal(t, codes, sortedStrings(dig(t, doc, "components", "schemas", "ProviderErrorCode", "enum")))
}

// TestOpenAPIRefsResolve: every $ref points at something in the document.
func TestOpenAPIRefsResolve(t *testing.T) {
	doc := loadOpenAPI(t)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				target := any(doc)
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, _ := target.(map[string]any)
					target = m[part]
				}
				assert.NotNil(t, target, "dangling $ref %s", ref)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(doc)
}

// TestOpenAPIMatchesRouter: the routes documented are exactly the routes
// the API listener registers (relay/admin's Route and relay's Handler),
// read from their source.
func TestOpenAPIMatchesRouter(t *testing.T) {
	doc := loadOpenAPI(t)
	var documented []string
	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			responses := dig(t, op, "responses").(map[string]any)
			for status, resp := range responses {
				if n, _ := strconv.Atoi(status); n >= 400 {
					assert.Contains(t, resp.(map[string]any)["$ref"], "#/components/responses/", "%s %s %s: errors use the shared error answers", method, path, status)
				}
			}
		}
	}
	var served []string
	served = append(served, routePatterns(t, "../admin/admin.go", "Route")...)
	served = append(served, routePatterns(t, "../server.go", "Handler")...)
	slices.Sort(documented)
	slices.Sort(served)
	require.NotEmpty(t, served)
	assert.Equal(t, served, documented)
}

// routePatterns collects the "METHOD /path" patterns registered in fn of
// file: string literals, and "GET "+protocol.TunnelPath.
func routePatterns(t *testing.T, file, fn string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	require.NoError(t, err)
	var out []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			if p := patternOf(call.Args[0]); p != "" {
				out = append(out, p)
			}
			return true
		})
	}
	return out
}

func patternOf(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.BasicLit:
		s, err := strconv.Unquote(e.Value)
		if err == nil && strings.Contains(s, " /") && strings.ToUpper(s[:1]) == s[:1] {
			return s
		}
	case *ast.BinaryExpr:
		lit, okX := e.X.(*ast.BasicLit)
		sel, okY := e.Y.(*ast.SelectorExpr)
		if okX && okY && sel.Sel.Name == "TunnelPath" {
			method, _ := strconv.Unquote(lit.Value)
			return method + protocol.TunnelPath
		}
	}
	return ""
}
