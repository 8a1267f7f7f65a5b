package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// SpliceWriteTimeout is how long one write of a data-phase splice may make
// no progress before the splice gives up on that reader.
const SpliceWriteTimeout = 2 * time.Minute

// Copy buffers. A direction waits for data with a small buffer, so the
// many idle keep-alive streams of a busy tunnel hold little memory. A read
// that fills its buffer moves the direction up a size (bulk transfers then
// read 256 KiB at once: a quarter of the tunnel frames and wakeups of
// 64 KiB reads); a read that fits the idle buffer again, the traffic of
// a request/response exchange, hands the larger buffer back to its pool.
// Every size is pooled, so a stream holds a large buffer only while data
// flows through it.
const (
	IdleBufferSize  = 4 << 10
	SmallBufferSize = 16 << 10
	BufferSize      = 256 << 10
)

// bufferTiers are the pools of each size, smallest first.
var bufferTiers = [...]*sync.Pool{
	{New: func() any { b := make([]byte, IdleBufferSize); return &b }},
	{New: func() any { b := make([]byte, SmallBufferSize); return &b }},
	{New: func() any { b := make([]byte, BufferSize); return &b }},
}

// copyBuffer is the buffer of one direction of a splice.
type copyBuffer struct {
	tier int
	bp   *[]byte
}

func newCopyBuffer() *copyBuffer {
	return &copyBuffer{bp: bufferTiers[0].Get().(*[]byte)}
}

func (c *copyBuffer) bytes() []byte { return *c.bp }

// adapt picks the buffer for the next read after one that returned n
// bytes.
func (c *copyBuffer) adapt(n int) {
	switch {
	case n == len(*c.bp) && c.tier < len(bufferTiers)-1:
		c.swap(c.tier + 1)
	case n <= IdleBufferSize && c.tier > 0:
		c.swap(0)
	}
}

func (c *copyBuffer) swap(tier int) {
	bufferTiers[c.tier].Put(c.bp)
	c.tier, c.bp = tier, bufferTiers[tier].Get().(*[]byte)
}

func (c *copyBuffer) release() { bufferTiers[c.tier].Put(c.bp) }

// closeWriter is implemented by *net.TCPConn, *net.UnixConn, *tls.Conn and
// yamux streams (whose Close is a write-side close).
type closeWriter interface {
	CloseWrite() error
}

// SpliceStats reports what one splice carried.
type SpliceStats struct {
	// AToB counts bytes read from a and written to b.
	AToB int64
	// BToA counts bytes read from b and written to a.
	BToA int64
}

// SpliceOptions bound a splice.
type SpliceOptions struct {
	// IdleTimeout ends the splice when no byte moved in either direction
	// for this long. Zero means no idle limit.
	IdleTimeout time.Duration
	// WriteTimeout ends the splice when one write makes no progress for
	// this long: the reader on that side is gone or stuck. Zero means no
	// limit.
	WriteTimeout time.Duration
	// CloseWriteA and CloseWriteB close the write half of a and b. When
	// nil, a CloseWrite method is used if the connection has one, else
	// the connection is left open until both directions end.
	CloseWriteA, CloseWriteB func() error
}

// Splice copies bytes both ways between two connections with half-close
// propagated, the way both ends of a Postern stream must (spec.md, "Data
// phase"): a->b and b->a run until both directions end, then both
// connections are closed. A clean EOF on one side half-closes the other,
// and the opposite direction keeps flowing until it finishes too; an error
// in one direction aborts both. It returns the byte counts and the first
// error that was not a normal end of stream.
func Splice(a, b net.Conn, opt SpliceOptions) (SpliceStats, error) {
	var (
		st       SpliceStats
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		abort    = func() { abortConn(a); abortConn(b) }
		clean    atomic.Int32 // directions that ended with their source's EOF
	)
	act := newActivity(opt.IdleTimeout, abort)
	defer act.stop()

	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		abort()
	}
	dir := func(dst, src net.Conn, n *int64, closeWrite func() error) {
		defer wg.Done()
		sink := newDirectSink(dst, src, act)
		if sink != nil {
			sink.attach()
		}
		c, err := copyBuf(dst, src, act, opt.WriteTimeout)
		if sink != nil {
			c += sink.detach()
		}
		*n = c
		if err != nil {
			fail(err)
			return
		}
		_, socket := dst.(*net.TCPConn)
		if clean.Add(1) == 2 && socket && closeWrite == nil {
			// The other direction read this socket to its end, and both
			// connections are closed next: the close sends the FIN a
			// shutdown would, one system call sooner.
			return
		}
		if closeWrite == nil {
			if cw, ok := dst.(closeWriter); ok {
				closeWrite = cw.CloseWrite
			}
		}
		if closeWrite != nil {
			if err := closeWrite(); err != nil && !isClosed(err) {
				fail(err)
			}
		}
	}
	// One direction runs on the caller's goroutine: an idle stream then
	// holds one goroutine stack fewer, on each side of the tunnel.
	wg.Add(2)
	go dir(b, a, &st.AToB, opt.CloseWriteB)
	dir(a, b, &st.BToA, opt.CloseWriteA)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
	if act.expired() {
		return st, ErrIdle
	}
	return st, firstErr
}

// abortConn ends c after a failure: a tunnel stream is reset, so the
// far end of the stream stops at once (a Close would only half-close it,
// and a writer there would wait for window until its write timeout);
// anything else is closed.
func abortConn(c net.Conn) {
	if r, ok := c.(interface{ Reset() error }); ok {
		_ = r.Reset()
		return
	}
	_ = c.Close()
}

// ErrIdle reports that a splice ended because nothing moved for the idle
// timeout.
var ErrIdle = errors.New("stream idle timeout")

func copyBuf(dst net.Conn, src io.Reader, act *activity, writeTimeout time.Duration) (int64, error) {
	cb := newCopyBuffer()
	defer cb.release()
	pending, held := tlsPending(src), tlsBatch(dst)
	var total int64
	for {
		buf := cb.bytes()
		n, rerr := src.Read(buf)
		// A TLS source returns one record per Read: once the buffer has
		// grown (bulk; request/response traffic stays in the idle buffer
		// and pays no extra system call), and while another whole record
		// already waits in the socket, read it into the same frame.
		for pending != nil && cb.tier > 0 && rerr == nil && n > 0 && n < len(buf) && pending() >= maxTLSRecord {
			var m int
			m, rerr = src.Read(buf[n:])
			n += m
		}
		if n > 0 {
			act.touch()
			if writeTimeout > 0 {
				_ = dst.SetWriteDeadline(time.Now().Add(writeTimeout))
			}
			w, werr := writeHeld(dst, held, buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
			cb.adapt(n)
		}
		if rerr != nil {
			if rerr == io.EOF || isClosed(rerr) {
				return total, nil
			}
			return total, rerr
		}
	}
}

// writeHeld writes p to dst, inside a hold of b when there is one and p
// takes more than one TLS record.
func writeHeld(dst io.Writer, b *batch, p []byte) (int, error) {
	if b == nil || len(p) <= maxTLSPayload {
		return dst.Write(p)
	}
	b.hold()
	n, err := dst.Write(p)
	if rerr := b.release(); err == nil && rerr != nil {
		return 0, rerr
	}
	return n, err
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}
