package testkit

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
)

// Connect asks a relay's proxy listener, over c, for a tunnel to target
// with a product's credentials: the connection id and an API key, as Basic
// auth. It returns the answer, whose body holds a refusal, and the reader
// that read it, which may already hold the target's first bytes; see
// BufferedConn. c's deadlines bound it.
func Connect(c net.Conn, connID, key, target string) (*http.Response, *bufio.Reader, error) {
	auth := base64.StdEncoding.EncodeToString([]byte(connID + ":" + key))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", target, target, auth); err != nil {
		return nil, nil, fmt.Errorf("send CONNECT %s: %w", target, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, nil, fmt.Errorf("read CONNECT %s answer: %w", target, err)
	}
	return resp, br, nil
}

// BufferedConn is an open tunnel whose reads come through R, the reader
// that read the CONNECT answer, so that no byte the target sent is lost.
// Writes and closes go to the embedded connection.
type BufferedConn struct {
	net.Conn
	R *bufio.Reader
}

func (c *BufferedConn) Read(p []byte) (int, error) { return c.R.Read(p) }
