package protocol

import (
	"bytes"
	"testing"
)

func seedFrames(f *testing.F) {
	for _, g := range goldenFrames() {
		b, err := AppendFrame(nil, g.typ, g.v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 3, 6, '{', '}'})
}

func FuzzReadFrame(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ReadFrame(bytes.NewReader(data), MaxStreamFrame)
		if err != nil {
			return
		}
		if len(fr.Body)+1 > MaxStreamFrame {
			t.Fatalf("frame of %d bytes passed a %d cap", len(fr.Body)+1, MaxStreamFrame)
		}
	})
}

func FuzzReadRequest(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ReadRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if req.Op == OpDial && (req.Port < 1 || req.Port > 65535 || req.Host == "") {
			t.Fatalf("invalid dial request accepted: %+v", req)
		}
		if len(req.Host) > MaxHostLen || len(req.ID) > MaxRequestIDLen {
			t.Fatalf("oversized field accepted: %+v", req)
		}
	})
}

func FuzzReadResult(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ReadResult(bytes.NewReader(data))
	})
}

func FuzzDecodeControl(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ReadFrame(bytes.NewReader(data), MaxControlFrame)
		if err != nil {
			return
		}
		var (
			h  Hello
			w  Welcome
			hl Health
			g  GoAway
			r  Revoked
		)
		_ = fr.Decode(FrameHello, &h)
		_ = fr.Decode(FrameWelcome, &w)
		_ = fr.Decode(FrameHealth, &hl)
		_ = fr.Decode(FrameGoAway, &g)
		_ = fr.Decode(FrameRevoked, &r)
	})
}
