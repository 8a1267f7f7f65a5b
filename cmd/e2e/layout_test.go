package e2e

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const module = "github.com/postern/postern"

type pkgInfo struct {
	path    string
	doc     string
	imports []string
	std     map[string]bool
}

// listPackages asks the go tool for every package's imports (non-test
// files) and doc line.
func listPackages(t *testing.T) []pkgInfo {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}\t{{join .Imports \" \"}}", module+"/...").Output()
	require.NoError(t, err)
	std, err := exec.Command("go", "list", "std").Output()
	require.NoError(t, err)
	stdSet := map[string]bool{}
	for _, p := range strings.Fields(string(std)) {
		stdSet[p] = true
	}
	var pkgs []pkgInfo
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 3)
		require.Len(t, parts, 3)
		pkgs = append(pkgs, pkgInfo{path: parts[0], doc: parts[1], imports: strings.Fields(parts[2]), std: stdSet})
	}
	require.NotEmpty(t, pkgs)
	return pkgs
}

func under(path, dir string) bool {
	p := module + "/" + dir
	return path == p || strings.HasPrefix(path, p+"/")
}

// Libraries of the transport, which only protocol/tunnel may use.
const (
	yamuxModule     = "github.com/hashicorp/yamux"
	websocketModule = "github.com/coder/websocket"
)

// TestDependencyDirection keeps the layout of docs/architecture.md true:
// cmd -> agent|relay|installer|provider -> allowlist, protocol; provider
// may also use the product's SDK (relay/client, relay/api), and nothing
// but cmd imports provider.
func TestDependencyDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, imp := range p.imports {
			own := strings.HasPrefix(imp, module+"/")
			if imp == yamuxModule || imp == websocketModule {
				assert.True(t, under(p.path, "protocol/tunnel"), "%s imports %s: the transport is built only in protocol/tunnel", p.path, imp)
			}
			if under(imp, "provider") && !under(p.path, "provider") {
				assert.True(t, under(p.path, "cmd"), "%s imports %s: only cmd imports provider", p.path, imp)
			}
			switch {
			case under(p.path, "provider/providertest"):
				// The test kit of provider: fakes of every provider.
				assert.True(t, p.std[imp] || under(imp, "provider") || under(imp, "relay/api") ||
					strings.HasPrefix(imp, "github.com/stretchr/testify/"), "%s imports %s", p.path, imp)
			case under(p.path, "provider"):
				// The product's side: the SDK, the wire contract, the
				// allowlist's address rules, and the standard library.
				assert.True(t, p.std[imp] || under(imp, "provider") || under(imp, "relay/client") || under(imp, "relay/api") ||
					under(imp, "protocol") && !under(imp, "protocol/tunnel") || under(imp, "allowlist"),
					"%s imports %s: provider uses only relay/client, relay/api, protocol, allowlist and the standard library", p.path, imp)
			case under(p.path, "protocol/tunnel/tunneltest"):
				// The test kit of the transport: both ends for tests.
				assert.True(t, p.std[imp] || under(imp, "protocol") || strings.HasPrefix(imp, "github.com/stretchr/testify/"),
					"%s imports %s", p.path, imp)
			case under(p.path, "protocol/tunnel"):
				// The wire contract's binding to WebSocket and yamux.
				assert.True(t, p.std[imp] || under(imp, "protocol") || imp == yamuxModule || imp == websocketModule,
					"%s imports %s: the transport uses only the protocol, yamux and the WebSocket library", p.path, imp)
			case under(p.path, "protocol"):
				assert.True(t, p.std[imp] || under(imp, "protocol"), "%s imports %s: protocol is stdlib only", p.path, imp)
			case under(p.path, "allowlist"):
				assert.False(t, own && !under(imp, "allowlist"), "%s imports %s: allowlist imports nothing of the project", p.path, imp)
				assert.True(t, p.std[imp] || own || imp == "golang.org/x/net/idna", "%s imports %s: allowlist stays pure", p.path, imp)
			case under(p.path, "agent"):
				assert.False(t, under(imp, "relay") || under(imp, "installer") || under(imp, "cmd"), "%s imports %s", p.path, imp)
			case under(p.path, "relay"):
				assert.False(t, under(imp, "agent") || under(imp, "installer") || under(imp, "cmd") || under(imp, "provider"), "%s imports %s", p.path, imp)
			case under(p.path, "installer"):
				assert.False(t, under(imp, "relay") || under(imp, "cmd"), "%s imports %s", p.path, imp)
			}
		}
	}
}

// TestEveryPackageSaysWhatItIs fails a package without a doc comment.
func TestEveryPackageSaysWhatItIs(t *testing.T) {
	for _, p := range listPackages(t) {
		assert.NotEmpty(t, strings.TrimSpace(p.doc), "package %s has no doc comment", p.path)
	}
}
