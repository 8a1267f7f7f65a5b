package mux

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

func frame(typ byte, flags uint16, id, length uint32, body ...byte) []byte {
	var hdr [headerSize]byte
	hdr[1] = typ
	binary.BigEndian.PutUint16(hdr[2:], flags)
	binary.BigEndian.PutUint32(hdr[4:], id)
	binary.BigEndian.PutUint32(hdr[8:], length)
	return append(hdr[:], body...)
}

func join(frames ...[]byte) []byte {
	var out []byte
	for _, f := range frames {
		out = append(out, f...)
	}
	return out
}

// FuzzPeerBytes feeds a session whatever a peer might send. Whatever it
// is, the session must not panic, must answer without blocking its
// reading, must serve the streams that make sense, and must end when the
// peer's bytes end.
func FuzzPeerBytes(f *testing.F) {
	f.Add(join(frame(typeWindowUpdate, flagSYN, 1, 0), frame(typeData, 0, 1, 5, 'h', 'e', 'l', 'l', 'o'), frame(typeWindowUpdate, flagFIN, 1, 0)))
	f.Add(join(frame(typeData, flagSYN|flagFIN, 3, 2, 'h', 'i'), frame(typePing, flagSYN, 0, 7), frame(typeGoAway, 0, 0, 0)))
	f.Add(join(frame(typeWindowUpdate, flagSYN, 1, 1<<30), frame(typeWindowUpdate, flagRST, 1, 0), frame(typeData, 0, 1, 3, 1, 2, 3)))
	f.Add(join(frame(typeData, flagSYN, 5, initialWindow+1)))
	f.Add(join(frame(typePing, flagACK, 0, 0), frame(typeWindowUpdate, flagACK, 7, 10)))
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<16 {
			return
		}
		a, b := net.Pipe()
		cfg := testConfig()
		cfg.AcceptBacklog = 4
		sess, err := Server(a, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		go func() { _, _ = io.Copy(io.Discard, b) }() // the peer reads all it is sent
		go func() {
			for {
				st, err := sess.Accept()
				if err != nil {
					return
				}
				go func() {
					_, _ = io.Copy(io.Discard, st)
					_ = st.Close()
				}()
			}
		}()
		_ = b.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := b.Write(in); err != nil && !sess.IsClosed() {
			t.Fatalf("the session stopped reading its peer: %v", err)
		}
		_ = b.Close()
		select {
		case <-sess.CloseChan():
		case <-time.After(5 * time.Second):
			t.Fatal("the session outlived its connection")
		}
	})
}
