package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/router"
	"github.com/postern/postern/relay/store"
)

// connect answers a CONNECT net/http read: one that follows plain
// http:// requests on a keep-alive connection, or one the front left to
// net/http (see Front). The agent dials, then 200 and the data phase, as
// serveConnect's.
func (p *Proxy) connect(w http.ResponseWriter, r *http.Request, conn store.Connection, key store.APIKey) {
	host, port, e := SplitTarget(r.Host)
	if e != nil {
		reply.Refuse(w, r, e)
		return
	}
	held, release := p.auth.Hold(p.life, key)
	handedOver := false
	defer func() {
		if !handedOver {
			release()
		}
	}()
	// Until the 200, a client that goes away ends the request too.
	defer context.AfterFunc(r.Context(), release)()

	id := reply.RequestID(r)
	stream, e := p.dial(held, conn, host, port, id)
	if e != nil {
		reply.Refuse(w, r, e)
		return
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = stream.Close()
		reply.Refuse(w, r, protocol.Errorf(protocol.InternalError, "connection cannot be hijacked"))
		return
	}
	_ = client.SetDeadline(time.Time{})
	// Bytes the client sent right behind its CONNECT are already buffered.
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	handedOver = true
	p.handOver(client, stream, early, held, release, dataPhase{conn: conn.ID, id: id, target: net.JoinHostPort(host, strconv.Itoa(port))})
}

// serveConnect serves a CONNECT the front read on client, with the bytes
// the client sent behind it (early): the checks, answers and data phase
// of ServeHTTP and connect, on the connection itself. Refusals are
// written as reply.Refuse writes them, and told to answered.
//
// The data phase runs on a goroutine of the proxy's own (see Close), and
// this one ends: the stack that read the head and waited for the agent
// goes, as net/http's does after a hijack, rather than stay with an idle
// stream for its whole life. So the key's hold, which ends the stream at
// once when the key is revoked or expires, is taken on the proxy's own
// context, which ends at Close, and passes to the data phase with the
// stream.
func (p *Proxy) serveConnect(client net.Conn, h connectHead, early []byte, answered Answered) {
	id := reply.NewID(8)
	refuse := func(e *protocol.Error) {
		answered(e.Reason, h.authz != "")
		reply.RefuseConn(client, id, e)
	}
	if e := CheckTarget(h.target); e != nil {
		refuse(e)
		return
	}
	conn, key, e := p.auth.ProxyHeader(p.life, client.RemoteAddr().String(), h.authz)
	if e == nil {
		e = p.admit(key.ID)
	}
	if e != nil {
		refuse(p.bearerHint(h.authz, e))
		return
	}
	host, port, _ := SplitTarget(h.target) // CheckTarget took it
	held, release := p.auth.Hold(p.life, key)
	_ = client.SetReadDeadline(time.Time{})
	var watch *hangUp
	if len(early) == 0 {
		watch = watchHangUp(client, release)
	}
	stream, e := p.dial(held, conn, host, port, id)
	if watch != nil {
		lead, err := watch.stop()
		if err != nil { // the client is gone: nobody to answer
			if stream != nil {
				_ = stream.Close()
			}
			release()
			_ = client.Close()
			return
		}
		early = lead
	}
	if e != nil {
		release()
		refuse(e)
		return
	}
	p.handOver(client, stream, early, held, release, dataPhase{conn: conn.ID, id: id, target: net.JoinHostPort(host, strconv.Itoa(port))})
}

// handOver answers 200 to an accepted CONNECT, sends the client's early
// bytes on, and starts the data phase; from here on it owns client,
// stream and the key's hold (release).
func (p *Proxy) handOver(client net.Conn, stream router.Stream, early []byte, held context.Context, release func(), d dataPhase) {
	abandon := func() {
		_ = client.Close()
		_ = stream.Close()
		release()
	}
	_ = client.SetWriteDeadline(time.Now().Add(tunnel.SpliceWriteTimeout))
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\nPostern-Request-Id: " + d.id + "\r\n\r\n")); err != nil {
		abandon()
		return
	}
	_ = client.SetWriteDeadline(time.Time{})
	if len(early) > 0 {
		if _, err := stream.Write(early); err != nil {
			abandon()
			return
		}
	}
	d.early = int64(len(early))
	if !p.start(&p.streams) {
		abandon() // the relay is stopping
		return
	}
	go func() {
		defer p.streams.Done()
		defer release()
		p.splice(held, client, stream, d)
	}()
}

// start counts one more goroutine of the proxy's in wg (a front's
// connection, a data phase), unless Close has begun: then nothing new
// may start, and Close's wait is not raced by an Add.
func (p *Proxy) start(wg *sync.WaitGroup) bool {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.life.Err() != nil {
		return false
	}
	wg.Add(1)
	return true
}

// dataPhase names one CONNECT's data phase in logs and counts.
type dataPhase struct {
	conn, id, target string
	early            int64 // bytes sent to the agent before the splice
}

// splice carries bytes between client and stream until both are done, or
// until held ends (the key revoked or expired, or the proxy closed), which
// cuts both.
func (p *Proxy) splice(held context.Context, client net.Conn, stream router.Stream, d dataPhase) {
	stopCut := context.AfterFunc(held, func() {
		// The stream first: a TLS client's Close sends its close alert,
		// which waits (at most 5 s) behind a batched write still going
		// out to a client that stopped reading.
		_ = stream.Close()
		_ = client.Close()
	})
	defer stopCut()
	st, err := tunnel.Splice(client, stream, tunnel.SpliceOptions{
		WriteTimeout: tunnel.SpliceWriteTimeout,
		IdleTimeout:  p.cfg.IdleTimeout,
	})
	st.AToB += d.early
	p.carried(st.AToB, st.BToA)
	if errors.Is(err, tunnel.ErrWriteTimeout) {
		// The tunnel no longer drains: end it so the agent reconnects,
		// rather than leave other streams' readers hung on it.
		p.log.Warn("tunnel write timed out; closing the tunnel", "connection", d.conn, "err", err)
		stream.Abort()
	}
	if p.log.Enabled(held, slog.LevelDebug) { // its arguments cost allocations even unwritten
		p.log.Debug("proxy stream done", "connection", d.conn, "request_id", d.id,
			"target", d.target, "up", st.AToB, "down", st.BToA, "err", err)
	}
}

// Close cuts the data phase of every CONNECT, client connection and
// stream, ends the front's connections still waiting for their head or
// for the agent, and waits until all of them have ended. A relay calls
// it when it stops, after the drain: a stream whose tunnel is gone may
// still be open towards the client, half-closed, until the client
// closes it.
func (p *Proxy) Close() {
	p.closeMu.Lock()
	p.end()
	p.closeMu.Unlock()
	p.conns.Wait() // before streams: a connection may still start one, or be refused
	p.streams.Wait()
}
