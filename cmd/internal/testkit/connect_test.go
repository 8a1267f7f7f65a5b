package testkit

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A target that speaks first may have its bytes read together with the
// proxy's answer; BufferedConn still hands them out, before the rest.
func TestConnectKeepsTheTargetsFirstBytes(t *testing.T) {
	client, proxy := net.Pipe()
	defer client.Close()
	seen := make(chan *http.Request, 1)
	go func() {
		defer proxy.Close()
		req, err := http.ReadRequest(bufio.NewReader(proxy))
		if err != nil {
			close(seen)
			return
		}
		seen <- req
		_, _ = io.WriteString(proxy, "HTTP/1.1 200 Connection established\r\n\r\nhello from the target")
	}()

	resp, br, err := Connect(client, "conn_1", "pak_key", "jira.corp.example:443")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	req := <-seen
	require.NotNil(t, req)
	assert.Equal(t, http.MethodConnect, req.Method)
	assert.Equal(t, "jira.corp.example:443", req.Host)
	assert.Equal(t, "Basic "+base64.StdEncoding.EncodeToString([]byte("conn_1:pak_key")), req.Header.Get("Proxy-Authorization"))

	got, err := io.ReadAll(&BufferedConn{Conn: client, R: br})
	require.NoError(t, err)
	assert.Equal(t, "hello from the target", string(got))
}
