package testkit

import "sync"

// tailBuffer is an io.Writer, safe for concurrent use, that keeps the last
// limit bytes written. It trims only when it holds twice the limit, so a
// chatty child costs amortised constant time per write rather than a copy
// of the whole tail.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func newTailBuffer(limit int) *tailBuffer { return &tailBuffer{limit: limit} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.limit {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.limit:]...)
	}
	return len(p), nil
}

// String returns the last limit bytes written.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if over := len(t.buf) - t.limit; over > 0 {
		return string(t.buf[over:])
	}
	return string(t.buf)
}
