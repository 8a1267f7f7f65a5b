package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/postern/postern/relay/api"
)

// MaxEventSize bounds one server-sent event (all its lines together).
const MaxEventSize = 64 << 10

// ErrOverflow means the relay dropped the event stream because it was
// read too slowly. Call Events again with the last id received: the relay
// replays what it still keeps.
var ErrOverflow = errors.New("event stream dropped by the relay: read too slowly")

// ErrEventTooLarge means the stream carried an event over MaxEventSize.
var ErrEventTooLarge = errors.New("event too large")

// Events follows GET /v1/events: it calls fn for every event the key may
// see, in order, until ctx ends (then it returns ctx.Err()), fn returns an
// error (returned as is), or the stream fails. A non-empty lastEventID
// resumes after that event. An event of type api.EventReset means events
// were missed beyond what the relay keeps: re-read the status of the
// connections you follow. To go on after an error, call Events again with
// the ID of the last event fn received.
func (c *Client) Events(ctx context.Context, lastEventID string, fn func(api.Event) error) error {
	return c.events(ctx, nil, lastEventID, fn)
}

// ConnectionEvents is Events for one connection only.
func (c *Client) ConnectionEvents(ctx context.Context, connectionID, lastEventID string, fn func(api.Event) error) error {
	return c.events(ctx, url.Values{"connection_id": {connectionID}}, lastEventID, fn)
}

func (c *Client) events(ctx context.Context, query url.Values, lastEventID string, fn func(api.Event) error) error {
	const path = "/v1/events"
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	// A stream has no end to wait for: the caller's ctx bounds it, not the
	// client's per-request timeout.
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return err // *url.Error already names the method and URL
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize))
		if err != nil {
			return fmt.Errorf("GET %s: read answer: %w", path, err)
		}
		return decodeError(resp, data)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return &UnexpectedResponseError{StatusCode: resp.StatusCode, Status: resp.Status, ContentType: resp.Header.Get("Content-Type")}
	}

	sr := newSSEReader(resp.Body)
	for {
		ev, err := sr.next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("GET %s: %w", path, io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("GET %s: %w", path, err)
		}
		switch ev.event {
		case api.EventOverflow:
			return ErrOverflow
		case api.EventTunnel, api.EventAuth, api.EventAllowlist, api.EventWarning, api.EventReset:
		default:
			continue // a kind this client does not know yet
		}
		var e api.Event
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			return fmt.Errorf("GET %s: decode %s event %q: %w", path, ev.event, ev.id, err)
		}
		e.Type = ev.event
		if e.ID == "" {
			e.ID = ev.id
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// sseEvent is one dispatched server-sent event.
type sseEvent struct {
	id    string
	event string
	data  string
}

// sseReader parses the text/event-stream format: fields "id", "event" and
// "data" (several data lines join with "\n"), ":" comments, and a blank
// line ending each event. Lines end with "\n", "\r\n" or "\r"; events
// without data are not dispatched, as the format says.
type sseReader struct {
	br     *bufio.Reader
	lastID string
	// skipLF is set after a line ended in "\r": a "\n" right behind it
	// belongs to that line. Not peeking keeps an event whose blank line
	// ends in "\r" from waiting for the next byte.
	skipLF bool
}

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 4096)}
}

// next returns the next event with data; io.EOF at the end of the stream.
func (r *sseReader) next() (sseEvent, error) {
	var (
		ev      sseEvent
		data    strings.Builder
		hasData bool
		size    int
	)
	for {
		line, err := r.readLine(MaxEventSize - size)
		if err != nil {
			return sseEvent{}, err
		}
		size += len(line) + 1
		if line == "" {
			if !hasData {
				ev, size = sseEvent{}, 0
				continue
			}
			ev.id = r.lastID
			ev.data = data.String()
			if ev.event == "" {
				ev.event = "message"
			}
			return ev, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "": // a comment
		case "event":
			ev.event = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				r.lastID = value
			}
		}
	}
}

// readLine returns one line without its terminator, refusing lines
// longer than limit.
func (r *sseReader) readLine(limit int) (string, error) {
	var b strings.Builder
	for {
		c, err := r.br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && b.Len() > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		skip := r.skipLF
		r.skipLF = false
		switch c {
		case '\n':
			if skip && b.Len() == 0 {
				continue
			}
			return b.String(), nil
		case '\r':
			r.skipLF = true
			return b.String(), nil
		}
		if b.Len() >= limit {
			return "", fmt.Errorf("%w: over %d bytes", ErrEventTooLarge, MaxEventSize)
		}
		b.WriteByte(c)
	}
}
