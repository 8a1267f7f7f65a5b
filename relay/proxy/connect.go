package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/router"
	"github.com/postern/postern/relay/store"
)

// connect answers a CONNECT: the agent dials, then 200 and the data phase.
//
// The data phase runs on a goroutine of the proxy's own (see Close), not on
// the HTTP server's: once the connection is hijacked the handler returns,
// and net/http lets go of the connection's reader, writers and deep stack,
// which an idle stream would otherwise hold for its whole life. So the
// key's hold, which ends the stream at once when the key is revoked or
// expires, is taken on the proxy's own context, which outlives the handler
// and ends at Close, and it passes to the data phase with the stream.
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
	ctx, cancel := context.WithCancel(held)
	defer context.AfterFunc(r.Context(), cancel)()
	defer cancel()

	id := reply.RequestID(r)
	stream, e := p.dial(ctx, conn, host, port, id)
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
	abandon := func() {
		_ = client.Close()
		_ = stream.Close()
	}
	_ = client.SetDeadline(time.Time{})
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\nPostern-Request-Id: " + id + "\r\n\r\n")); err != nil {
		abandon()
		return
	}
	// Bytes the client sent right behind its CONNECT are already buffered.
	early := brw.Reader.Buffered()
	if early > 0 {
		pending, _ := brw.Reader.Peek(early)
		if _, err := stream.Write(pending); err != nil {
			abandon()
			return
		}
	}
	d := dataPhase{conn: conn.ID, id: id, target: net.JoinHostPort(host, strconv.Itoa(port)), early: int64(early)}
	if !p.startStream() {
		abandon() // the relay is stopping
		return
	}
	handedOver = true
	go func() {
		defer p.streams.Done()
		defer release()
		p.splice(held, client, stream, d)
	}()
}

// startStream counts one more data phase, unless Close has begun: then
// nothing new may start, and Close's wait is not raced by an Add.
func (p *Proxy) startStream() bool {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.life.Err() != nil {
		return false
	}
	p.streams.Add(1)
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
// stream, and waits until they have ended. A relay calls it when it stops,
// after the drain: a stream whose tunnel is gone may still be open
// towards the client, half-closed, until the client closes it.
func (p *Proxy) Close() {
	p.closeMu.Lock()
	p.end()
	p.closeMu.Unlock()
	p.streams.Wait()
}
