package e2e

import (
	"io"
	"sync"
)

// syncWriter serializes writes from a child's stdout and stderr.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// String returns what was written, when w is a fmt.Stringer.
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.w.(interface{ String() string }); ok {
		return st.String()
	}
	return ""
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
