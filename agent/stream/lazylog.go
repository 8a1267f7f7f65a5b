package stream

import (
	"context"
	"log/slog"
	"sync"
)

// lazyAttrs adds attributes to a handler's records, but makes the handler
// with them only when a record is written. A handler formats its
// attributes when it is made, and the agent's handler is a tee of two or
// three: done for every stream, that cost a stream most of a microsecond
// and about a kilobyte kept for its whole life, for log lines that most
// streams never write at the default level.
type lazyAttrs struct {
	base  slog.Handler
	attrs []slog.Attr
	once  sync.Once
	with  slog.Handler
}

// withLazy returns log with attrs, made as lazyAttrs describes.
func withLazy(log *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(&lazyAttrs{base: log.Handler(), attrs: attrs})
}

func (l *lazyAttrs) handler() slog.Handler {
	l.once.Do(func() { l.with = l.base.WithAttrs(l.attrs) })
	return l.with
}

// Enabled asks the handler underneath: attributes do not change a level.
func (l *lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return l.base.Enabled(ctx, level)
}

func (l *lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	return l.handler().Handle(ctx, r)
}

func (l *lazyAttrs) WithAttrs(attrs []slog.Attr) slog.Handler { return l.handler().WithAttrs(attrs) }

func (l *lazyAttrs) WithGroup(name string) slog.Handler { return l.handler().WithGroup(name) }
