package reply

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/postern/postern/protocol"
)

// Refuse answers with e as Error does, and on an HTTP/1 connection with
// the reason as the status line's text: `HTTP/1.1 403 TARGET_BLOCKED`.
// curl, git, Python's requests and Go print only the status line of a
// refused CONNECT, so the reason must be in it. net/http always writes the
// standard text, so Refuse takes the connection over, writes the answer
// itself and closes it (Connection: close); the headers and JSON body are
// those of Error. Where the connection cannot be taken over (HTTP/2, a
// test recorder) it answers as Error does.
func Refuse(w http.ResponseWriter, r *http.Request, e *protocol.Error) {
	status, body := prepare(w, r, e)
	if r.ProtoMajor != 1 {
		JSON(w, status, body)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		JSON(w, status, body)
		return
	}
	defer lingeringClose(conn)
	_ = conn.SetWriteDeadline(time.Now().Add(rawWriteTimeout))
	_, _ = brw.Write(Raw(status, body, w.Header()))
	_ = brw.Flush()
}

// RefuseConn answers e on conn, a connection no HTTP server holds, as
// Refuse answers on one it takes over: the whole answer under request id,
// the reason as the status text, then a lingering close.
func RefuseConn(conn net.Conn, id string, e *protocol.Error) {
	h := http.Header{}
	status, body := prepareHeader(h, id, e)
	defer lingeringClose(conn)
	_ = conn.SetWriteDeadline(time.Now().Add(rawWriteTimeout))
	_, _ = conn.Write(Raw(status, body, h))
}

// rawWriteTimeout bounds writing an answer on a connection taken over.
const rawWriteTimeout = 5 * time.Second

// Raw renders a whole HTTP/1.1 answer of e's body: the reason as the
// status text, the headers of h (Postern-Reason and the others Error
// sets), the JSON body, and Connection: close.
func Raw(status int, body protocol.Error, h http.Header) []byte {
	js, err := json.Marshal(body)
	if err != nil {
		js = []byte(`{"reason":"INTERNAL_ERROR","message":"encode response"}`)
	}
	js = append(js, '\n')
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(js)))
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	out := []byte("HTTP/1.1 " + strconv.Itoa(status) + " " + statusText(body.Reason, status) + "\r\n")
	buf := &byteWriter{b: out}
	_ = h.Write(buf)
	return append(append(buf.b, "\r\n"...), js...)
}

// statusText is the reason when it is a plain token, else the standard
// text of status.
func statusText(reason protocol.Reason, status int) string {
	for _, c := range []byte(reason) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return http.StatusText(status)
		}
	}
	if reason == "" {
		return http.StatusText(status)
	}
	return string(reason)
}

type byteWriter struct{ b []byte }

func (w *byteWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// lingeringClose closes conn after the client has had the answer: it
// half-closes, then reads and drops what the client still sends for a
// moment, so that unread request bytes do not turn the close into a
// reset that destroys the answer in flight.
func lingeringClose(conn net.Conn) {
	defer conn.Close()
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, conn, lingerMax)
}

// lingerTimeout and lingerMax bound the reading after an answer.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 256 << 10
)
