package stream

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
)

// countingHandler counts the handlers made from it with attributes.
type countingHandler struct {
	slog.Handler
	made *atomic.Int32
}

func (c countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c.made.Add(1)
	return countingHandler{Handler: c.Handler.WithAttrs(as), made: c.made}
}

func TestAStreamsLoggerIsMadeOnlyWhenALineIsWritten(t *testing.T) {
	var out bytes.Buffer
	made := &atomic.Int32{}
	base := slog.New(countingHandler{Handler: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}), made: made})
	log := withLazy(base, slog.String("request_id", "req_1"), slog.String("op", "dial"), slog.String("target", "git.corp:443"))

	log.Debug("stream done", "to_target", 10)
	assert.Zero(t, made.Load(), "a line below the level makes no handler")
	assert.Zero(t, out.Len())
	assert.False(t, log.Enabled(context.Background(), slog.LevelDebug))

	log.Info("stream refused", "reason", "TARGET_BLOCKED")
	log.With("addr", "10.0.0.1:443").Warn("tunnel write timed out")
	assert.Equal(t, int32(2), made.Load(), "one handler with the stream's attributes, one more for With")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if assert.Len(t, lines, 2) {
		for _, l := range lines {
			assert.Contains(t, l, "request_id=req_1 op=dial target=git.corp:443", "every line names its stream")
		}
		assert.Contains(t, lines[0], "reason=TARGET_BLOCKED")
		assert.Contains(t, lines[1], "addr=10.0.0.1:443")
	}
}
