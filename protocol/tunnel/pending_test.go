package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tlsPair returns both ends of a loopback TLS connection; the server end
// sits on a batch over a connection that counts its writes.
func tlsPair(t *testing.T) (client *tls.Conn, server *tls.Conn, raw *countingConn) {
	t.Helper()
	cert, pool := selfSigned(t)
	c, s := tcpPair(t)
	// Room for what TestASpliceFromTLSJoinsRecordsThatHaveArrived sends.
	require.NoError(t, s.(*net.TCPConn).SetReadBuffer(1<<20))
	raw = &countingConn{Conn: s}
	server = tls.Server(&batch{Conn: raw}, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	client = tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	require.NoError(t, client.Handshake())
	require.NoError(t, <-errc)
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server, raw
}

// frames records each Write as one tunnel frame would carry it.
type frames struct {
	net.Conn
	mu    sync.Mutex
	sizes []int
	got   bytes.Buffer
}

func (f *frames) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sizes = append(f.sizes, len(p))
	f.got.Write(p)
	return len(p), nil
}

func (f *frames) snapshot() ([]int, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.sizes...), append([]byte(nil), f.got.Bytes()...)
}

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) NetConn() net.Conn { return c.Conn }

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

func TestASpliceFromTLSJoinsRecordsThatHaveArrived(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the socket's unread count is asked on Linux only")
	}
	client, server, _ := tlsPair(t)
	payload := make([]byte, 160<<10)
	_, _ = rand.Read(payload)
	go func() {
		_, _ = client.Write(payload) // 10 records of 16 KiB
		_ = client.CloseWrite()
	}()
	// The records are all in the socket before the splice reads one.
	pending := tlsPending(server)
	require.NotNil(t, pending, "a TLS connection over a socket is seen through")
	require.Eventually(t, func() bool { return pending() >= len(payload) }, 10*time.Second, 5*time.Millisecond)

	dst := &frames{}
	n, err := copyBuf(dst, server, newActivity(0, func() {}), 0)
	require.NoError(t, err)
	sizes, got := dst.snapshot()
	assert.Equal(t, int64(len(payload)), n)
	assert.True(t, bytes.Equal(payload, got), "bytes and their order unchanged")
	// Without joining, every record is a frame: 21 here, as the client
	// starts with small records and grows them to 16 KiB. Joined, the
	// records before the buffer grows pass one by one (request/response
	// traffic is never asked about), then all that waits goes out
	// together but for what TLS had already taken off the socket.
	assert.LessOrEqual(t, len(sizes), 8, "frame sizes %v", sizes)
	assert.Greater(t, slices.Max(sizes), 4*maxTLSPayload, "frame sizes %v", sizes)
}

func TestASpliceFromTLSNeverWaitsForMoreThanHasArrived(t *testing.T) {
	client, server, _ := tlsPair(t)
	payload := bytes.Repeat([]byte("interactive "), 10<<10) // 120 KiB, then silence
	_, err := client.Write(payload)
	require.NoError(t, err)

	dst := &frames{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = copyBuf(dst, server, newActivity(0, func() {}), 0)
	}()
	// The client sends nothing more and keeps the connection open: every
	// byte it sent must still come through.
	require.Eventually(t, func() bool {
		_, got := dst.snapshot()
		return len(got) == len(payload)
	}, 10*time.Second, 5*time.Millisecond, "the splice held back bytes that had arrived")
	_ = client.Close()
	<-done
}

func TestATLSWriteInsideAHoldLeavesInOneSystemCall(t *testing.T) {
	client, server, raw := tlsPair(t)
	go func() { _, _ = io.Copy(io.Discard, client) }()
	b := tlsBatch(server)
	require.NotNil(t, b, "the batch under the TLS connection is found")

	before := raw.count()
	_, err := writeHeld(server, b, make([]byte, 256<<10))
	require.NoError(t, err)
	assert.Equal(t, 1, raw.count()-before, "16 records, one write to the socket")

	before = raw.count()
	_, err = server.Write(make([]byte, 256<<10))
	require.NoError(t, err)
	assert.Equal(t, 16, raw.count()-before, "without the hold, one write per record")
}

func TestUpgradeBatchesATunnelAcceptedOnABatchListener(t *testing.T) {
	for _, secure := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", secure), func(t *testing.T) {
			cert, pool := selfSigned(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			got := make(chan net.Conn, 1)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := Upgrade(r.Context(), w, r, "test")
				if err == nil {
					got <- c
				}
			}))
			srv.Listener = BatchListener(ln)
			scheme, hc := "ws://", http.DefaultClient
			if secure {
				srv.Listener = tls.NewListener(srv.Listener, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
				scheme = "wss://"
				hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
			}
			srv.Start()
			defer srv.Close()

			ws, _, err := websocket.Dial(t.Context(), scheme+ln.Addr().String(), &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"test"}})
			require.NoError(t, err)
			c := <-got
			co, ok := c.(*coalescer)
			require.True(t, ok)
			server := co.Conn.(*endsWith).wsConn
			if secure {
				assert.NotNil(t, co.batch, "the tunnel writes each message in one system call under TLS")
			} else {
				assert.Nil(t, co.batch, "on plain TCP no batch copies the messages")
				assert.True(t, server.writev, "on plain TCP the server end writes each message in one vectored system call")
			}
			_ = ws.CloseNow()
			_ = c.Close()
		})
	}
}

// selfSigned returns a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
