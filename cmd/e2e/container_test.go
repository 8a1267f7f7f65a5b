package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/cmd/internal/testkit"
	"github.com/postern/postern/relay/api"
)

// TestDockerfileShape holds the Dockerfile to what docs/operations.md
// promises: static binaries, a minimal base, a non-root user, and a
// HEALTHCHECK that asks the relay's /readyz.
func TestDockerfileShape(t *testing.T) {
	data, err := os.ReadFile(repoPath("Dockerfile"))
	require.NoError(t, err)
	df := string(data)
	assert.Contains(t, df, "CGO_ENABLED=0 go build", "static binaries")
	assert.Contains(t, df, "FROM gcr.io/distroless/static-debian12:nonroot AS runtime")
	assert.Contains(t, df, "USER 65532:65532")
	assert.NotContains(t, df, "USER root")
	assert.Regexp(t, `HEALTHCHECK [^\n]*\\\n\s+CMD \["/usr/local/bin/postern-relay", "health", "--url", "http://127.0.0.1:8080/readyz"\]`, df)
	for _, target := range []string{"AS relay", "AS agent", "AS demotarget"} {
		assert.Contains(t, df, "FROM runtime "+target)
	}
}

// dockerAvailable says why docker cannot run containers here, or "".
func dockerAvailable() string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "docker is not installed"
	}
	out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return "docker cannot reach its daemon (" + strings.TrimSpace(lines[len(lines)-1]) + ")"
	}
	if err := exec.Command("docker", "compose", "version").Run(); err != nil {
		return "docker compose is not installed"
	}
	return ""
}

// TestComposeExampleSmoke brings examples/compose.yaml up (relay, setup,
// demo target, agent) and sends a request through the relay's proxy to
// the demo service, the way docs/operations.md#containers shows. It
// needs docker with compose and the host's ports 8080 and 8081.
func TestComposeExampleSmoke(t *testing.T) {
	if why := dockerAvailable(); why != "" {
		t.Skipf("%s: the compose example (examples/compose.yaml) was not smoke-tested", why)
	}
	project := fmt.Sprintf("postern-e2e-%d", os.Getpid())
	compose := func(args ...string) ([]byte, error) {
		cmd := exec.Command("docker", append([]string{"compose", "-f", repoPath("examples", "compose.yaml"), "-p", project}, args...)...)
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() { _, _ = compose("down", "--volumes", "--timeout", "10") })
	out, err := compose("up", "--build", "--detach", "--wait", "--wait-timeout", "300")
	require.NoError(t, err, "compose up:\n%s", out)

	relayCLI := func(args ...string) ([]byte, error) { // the CLI inside the relay's container
		args = append([]string{"exec", "-T", "relay", "postern-relay"}, args...)
		return compose(append(args, "--admin-key-file", "/var/lib/postern-relay/admin.key", "--json")...)
	}
	out, err = relayCLI("api-keys", "create", "product", "--workspace", "demo")
	require.NoError(t, err, "api-keys create:\n%s", out)
	var key api.APIKey
	require.NoError(t, json.Unmarshal(out, &key), "%s", out)
	out, err = relayCLI("connections", "list")
	require.NoError(t, err, "connections list:\n%s", out)
	var list api.ConnectionList
	require.NoError(t, json.Unmarshal(out, &list), "%s", out)
	require.NotEmpty(t, list.Connections)
	connID := list.Connections[0].ID

	var body string
	testkit.WaitFor(t, 60*time.Second, "a request through the compose relay to the demo service", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:8081", 5*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, br, err := testkit.Connect(c, connID, key.Key, "target:8090")
		if err != nil || resp.StatusCode != http.StatusOK {
			return false
		}
		tunnel := &testkit.BufferedConn{Conn: c, R: br}
		if _, err := io.WriteString(tunnel, "GET / HTTP/1.1\r\nHost: target\r\nConnection: close\r\n\r\n"); err != nil {
			return false
		}
		b, _ := io.ReadAll(tunnel)
		body = string(b)
		return strings.Contains(body, "hello from the demo service")
	})
	assert.Contains(t, body, "200 OK")
}
