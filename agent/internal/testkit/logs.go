package testkit

import (
	"context"
	"log/slog"
	"slices"
	"sync"
)

// LogRecord is one captured log line with its attributes as strings.
type LogRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// LogSink captures what the agent logs, so tests can assert on what an
// operator would read.
type LogSink struct {
	mu   sync.Mutex
	recs []LogRecord
}

// Logger returns a logger writing into the sink.
func (s *LogSink) Logger() *slog.Logger { return slog.New(&sinkHandler{sink: s}) }

// Find returns the records with the given message.
func (s *LogSink) Find(msg string) []LogRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []LogRecord
	for _, r := range s.recs {
		if r.Msg == msg {
			out = append(out, r)
		}
	}
	return out
}

type sinkHandler struct {
	sink  *LogSink
	attrs []slog.Attr
}

func (h *sinkHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *sinkHandler) Handle(_ context.Context, r slog.Record) error {
	rec := LogRecord{Level: r.Level, Msg: r.Message, Attrs: make(map[string]string)}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.sink.mu.Lock()
	h.sink.recs = append(h.sink.recs, rec)
	h.sink.mu.Unlock()
	return nil
}

func (h *sinkHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sinkHandler{sink: h.sink, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *sinkHandler) WithGroup(string) slog.Handler { return h }
