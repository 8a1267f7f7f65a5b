package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/cmd/internal/testkit"
)

// repoPath is a path in the repository, from this package's directory.
func repoPath(parts ...string) string {
	return filepath.Join(append([]string{"..", ".."}, parts...)...)
}

// TestExampleAgentConfigsValidate: `postern-agent validate` accepts every
// agent config a newcomer copies from examples/.
func TestExampleAgentConfigsValidate(t *testing.T) {
	_, agentBin := testkit.Binaries(t)
	for _, name := range []string{"agent.yaml", filepath.Join("compose", "agent.yaml")} {
		t.Run(name, func(t *testing.T) {
			path := repoPath("examples", name)
			out, err := exec.Command(agentBin, "validate", "--config", path).CombinedOutput()
			require.NoError(t, err, "validate %s:\n%s", name, out)
			assert.Contains(t, string(out), path+": ok (")
			assert.NotContains(t, string(out), "warning")
		})
	}
}

// TestExampleRelayConfigsServe: the relay starts on every relay config in
// examples/ (flags move the listeners and data to the test's own), turns
// ready, and `postern-relay health`, the container's HEALTHCHECK, says so.
func TestExampleRelayConfigsServe(t *testing.T) {
	relayBin, _ := testkit.Binaries(t)
	for _, name := range []string{"relay.yaml", filepath.Join("compose", "relay.yaml")} {
		t.Run(name, func(t *testing.T) {
			listen := testkit.FreeAddr(t)
			relay := testkit.Start(t, "relay", relayBin, "serve", "--config", repoPath("examples", name),
				"--data", t.TempDir(), "--listen", listen, "--proxy-listen", testkit.FreeAddr(t))
			ready := "http://" + listen + "/readyz"
			testkit.WaitFor(t, 30*time.Second, "relay ready", func() bool {
				require.False(t, relay.Exited(), "relay exited: %v\n%s", relay.Err(), relay.Output())
				return exec.Command(relayBin, "health", "--url", ready).Run() == nil
			})
			out, err := exec.Command(relayBin, "health", "--url", ready).CombinedOutput()
			require.NoError(t, err)
			assert.Equal(t, ready+": 200 OK\n", string(out))
			relay.Signal(t, syscall.SIGTERM)
			<-relay.Done()
			require.NoError(t, relay.Err(), relay.Output())

			out, err = exec.Command(relayBin, "health", "--url", ready).CombinedOutput()
			require.Error(t, err, "health of a stopped relay")
			assert.Contains(t, string(out), "error: "+ready+": ")
		})
	}
}

// commentedKey is a key shown commented out in an example ("#   key: v"),
// for the reader to turn on.
var commentedKey = regexp.MustCompile(`(?m)^#\s{2,}([a-z_]+):`)

// TestExampleKeysDocumented: every key an example sets or shows commented
// out is in the reference the example points to.
func TestExampleKeysDocumented(t *testing.T) {
	for example, doc := range map[string]string{
		"agent.yaml":                           "agent.md",
		filepath.Join("compose", "agent.yaml"): "agent.md",
		"relay.yaml":                           "operations.md",
		filepath.Join("compose", "relay.yaml"): "operations.md",
	} {
		data, err := os.ReadFile(repoPath("examples", example))
		require.NoError(t, err)
		ref, err := os.ReadFile(repoPath("docs", doc))
		require.NoError(t, err)
		var root yaml.Node
		require.NoError(t, yaml.Unmarshal(data, &root), example)
		keys := mappingKeys(&root)
		for _, m := range commentedKey.FindAllStringSubmatch(string(data), -1) {
			keys = append(keys, m[1])
		}
		require.NotEmpty(t, keys, example)
		for _, key := range keys {
			documented := strings.Contains(string(ref), "`"+key+"`") || strings.Contains(string(ref), "\n"+key+":") ||
				strings.Contains(string(ref), "  "+key+":") || strings.Contains(string(ref), "- "+key+":")
			assert.True(t, documented, "%s: key %q is not in docs/%s", example, key, doc)
		}
	}
}

// mappingKeys lists every mapping key in the document, nested ones too.
func mappingKeys(n *yaml.Node) []string {
	var keys []string
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			keys = append(keys, n.Content[i].Value)
		}
	}
	for _, c := range n.Content {
		keys = append(keys, mappingKeys(c)...)
	}
	return keys
}
