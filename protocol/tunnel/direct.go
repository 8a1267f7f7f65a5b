package tunnel

import (
	"net"
	"sync/atomic"
	"syscall"
)

// directSource is a stream whose received bytes the multiplexer's
// receive loop can write to the splice's destination itself
// (mux.Stream.DeliverDirect).
type directSource interface {
	DeliverDirect(fn func([]byte) int)
}

// directSink writes a stream's bytes to a socket from the multiplexer's
// receive loop, without waiting: when the socket takes them at once, as
// a request or an answer mostly does, the splice's reader is never
// woken to copy them. What the socket does not take goes the usual way,
// through the reader and its bounded write.
type directSink struct {
	src   directSource
	rc    syscall.RawConn
	batch *batch // the batch over the socket, or nil
	act   *activity
	// wrote counts the bytes written here, which the reader's own count
	// does not include.
	wrote atomic.Int64

	// Set and read by deliver alone, one call at a time.
	p  []byte
	n  int
	fn func(fd uintptr) bool // write, as a method value made once
}

// WriteThrough is a connection wrapper whose writes go to the connection
// it returns unchanged and uncounted, as a PROXY-header reader's do: a
// splice may write to that connection in its place.
type WriteThrough interface {
	WriteThrough() net.Conn
}

// newDirectSink returns a sink for dst when src can deliver directly and
// dst is a TCP socket, bare or under a BatchListener's batch or
// WriteThrough wrappers, or nil. A connection that changes what it
// writes (TLS, a wrapper that rewrites or counts) is left to the reader,
// and so is any platform without a non-blocking write here.
func newDirectSink(dst net.Conn, src any, act *activity) *directSink {
	ds, ok := src.(directSource)
	if !ok || !canWriteDirect {
		return nil
	}
	d := &directSink{src: ds, act: act}
	if b, ok := dst.(*batch); ok {
		d.batch, dst = b, b.Conn
	}
	for range maxWrappers {
		w, ok := dst.(WriteThrough)
		if !ok {
			break
		}
		dst = w.WriteThrough()
	}
	tcp, ok := dst.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	d.rc, d.fn = rc, d.write
	return d
}

// attach has the source's receive loop write through the sink.
func (d *directSink) attach() { d.src.DeliverDirect(d.deliver) }

// detach stops the writes and returns how many bytes they carried.
func (d *directSink) detach() int64 {
	d.src.DeliverDirect(nil)
	return d.wrote.Load()
}

// maxWrappers bounds the WriteThrough wrappers looked through.
const maxWrappers = 4

// deliver writes what the socket takes of p now and returns how much.
func (d *directSink) deliver(p []byte) int {
	if d.batch != nil {
		// A batch gathering a message keeps the socket until it is done.
		d.batch.mu.Lock()
		defer d.batch.mu.Unlock()
		if d.batch.holding {
			return 0
		}
	}
	d.p, d.n = p, 0
	err := d.rc.Write(d.fn)
	n := d.n
	d.p = nil
	if err != nil || n <= 0 {
		return 0 // the reader's write meets the error, or waits for room
	}
	d.wrote.Add(int64(n))
	d.act.touch()
	return n
}

// write is one non-blocking write of d.p to fd; it never asks to wait.
func (d *directSink) write(fd uintptr) bool {
	for {
		n, err := writeNow(fd, d.p)
		if err == syscall.EINTR {
			continue
		}
		d.n = n
		return true
	}
}
