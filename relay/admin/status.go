package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/events"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/status"
	"github.com/postern/postern/relay/store"
)

// CheckTimeout is how long the relay waits for a live check's result. The
// agent bounds its check to 10 s; the rest is room for the round trip.
const CheckTimeout = 12 * time.Second

// Bounds on what the relay passes on from an agent's check result.
const (
	MaxCheckSteps  = 8
	MaxCheckDetail = 1024
)

func (a *API) connectionStatus(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := a.visible(w, r, k, r.PathValue("id"))
	if !ok {
		return
	}
	var target *status.Target
	if baseURL := r.URL.Query().Get("base_url"); baseURL != "" {
		t, e := status.ParseBaseURL(baseURL)
		if e != nil {
			reply.Error(w, r, e)
			return
		}
		target = &t
	}
	st, err := a.status.Status(r.Context(), c, target, time.Now())
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	reply.JSON(w, http.StatusOK, st)
}

// check serves POST /v1/connections/{id}/check: a live check run by the
// agent inside the customer network. A check that ran answers 200 with its
// verdict; a check that could not run (no tunnel, revoked, an agent
// without the operation) answers the error of the reason table.
func (a *API) check(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	c, ok := a.visible(w, r, k, r.PathValue("id"))
	if !ok {
		return
	}
	var req api.CheckRequest
	if e := decodeBody(r, &req); e != nil {
		reply.Error(w, r, e)
		return
	}
	t, e := status.ParseBaseURL(req.BaseURL)
	if e != nil {
		reply.Error(w, r, e)
		return
	}
	id := reply.RequestID(r)
	cr, e := a.checkAgent(r.Context(), c, t, req.BaseURL, id)
	if e != nil {
		a.log.Info("check not run", "connection", c.ID, "request_id", id, "reason", e.Reason, "message", e.Message)
		reply.Error(w, r, e)
		return
	}
	out := toAPICheck(cr)
	a.log.Info("check done", "connection", c.ID, "request_id", id, "ready", out.Ready, "reason", out.Reason)
	reply.JSON(w, http.StatusOK, out)
}

// checkAgent asks one of the connection's agents to run a check.
func (a *API) checkAgent(ctx context.Context, c store.Connection, t status.Target, baseURL, reqID string) (protocol.CheckResult, *protocol.Error) {
	req := protocol.Request{Op: protocol.OpCheck, ID: reqID, Host: t.Host, Port: t.Port, BaseURL: baseURL}
	st, res, e := a.router.Ask(ctx, c, req, CheckTimeout)
	if e != nil {
		if e.Reason == protocol.UnsupportedOp {
			e.Message = "the agent does not support live checks; upgrade it: " + e.Message
		}
		return protocol.CheckResult{}, e
	}
	_ = st.Close()
	if res.Check == nil {
		return protocol.CheckResult{}, protocol.Errorf(protocol.ProtocolError, "the agent answered the check without its outcome")
	}
	return *res.Check, nil
}

// toAPICheck passes the agent's outcome on unchanged in meaning: the
// reason stays the agent's, the provider code comes from the reason table,
// and only the size is bounded.
func toAPICheck(cr protocol.CheckResult) api.Check {
	out := api.Check{
		Ready:             cr.Ready && cr.Reason == protocol.ReasonUnknown,
		Reason:            cr.Reason,
		ProviderErrorCode: cr.Reason.Info().ProviderErrorCode,
		RetryAfter:        max(cr.RetryAfterSeconds, 0),
		Steps:             make([]api.CheckStep, 0, min(len(cr.Steps), MaxCheckSteps)),
	}
	for _, s := range cr.Steps[:min(len(cr.Steps), MaxCheckSteps)] {
		detail := s.Detail
		if len(detail) > MaxCheckDetail {
			detail = detail[:MaxCheckDetail]
		}
		out.Steps = append(out.Steps, api.CheckStep{Step: s.Step, OK: s.OK, MS: max(s.MS, 0), Reason: s.Reason, Detail: detail})
	}
	return out
}

// streamEvents streams status events as server-sent events. A workspace
// key sees its workspace's connections only; ?connection_id= narrows the
// stream to one connection the key may see. Last-Event-ID resumes after
// that event, or answers with a reset when it can no longer.
func (a *API) streamEvents(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	connID := r.URL.Query().Get("connection_id")
	if connID != "" {
		if _, ok := a.visible(w, r, k, connID); !ok {
			return
		}
	}
	match := func(e api.Event) bool {
		return (k.Admin || e.Workspace == k.Workspace) && (connID == "" || e.ConnectionID == connID)
	}
	sub, replay, newest, gap := a.bus.Subscribe(r.Context(), match, r.Header.Get("Last-Event-ID"))
	defer a.bus.Unsubscribe(sub)

	st := events.NewStream(w)
	if err := st.Comment("postern events"); err != nil {
		return
	}
	if errors.Is(gap, events.ErrResumeGap) {
		if st.Send(newest, api.Event{Type: api.EventReset, Time: time.Now().UTC()}) != nil {
			return
		}
	}
	for _, e := range replay {
		if st.Send(e.ID, e) != nil {
			return
		}
	}
	a.follow(r, k, sub, st)
}

// follow writes the subscriber's events until the client goes, the node
// stops, the stream falls behind, or the key is revoked.
func (a *API) follow(r *http.Request, k store.APIKey, sub *events.Subscriber, st *events.Stream) {
	keepAlive := time.NewTicker(a.cfg.EventKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.bus.Done():
			return
		case <-sub.Dropped():
			a.log.Info("event stream dropped: client reads too slowly", "key", k.ID, "request_id", reply.RequestID(r))
			_ = st.Send("", api.Event{Type: api.EventOverflow, Time: time.Now().UTC()})
			return
		case e := <-sub.C():
			if st.Send(e.ID, e) != nil {
				return
			}
		case <-keepAlive.C:
			if !a.keyStillValid(r.Context(), k) || st.Comment("keepalive") != nil {
				return
			}
		}
	}
}

// keyStillValid ends the streams of a key revoked after they started. A
// store that does not answer does not end them.
func (a *API) keyStillValid(ctx context.Context, k store.APIKey) bool {
	cur, err := a.store.GetAPIKey(ctx, k.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	return err != nil || cur.RevokedAt == nil
}
