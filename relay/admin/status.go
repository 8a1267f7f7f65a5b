package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/auth"
	"github.com/postern/postern/relay/events"
	"github.com/postern/postern/relay/history"
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
	st, err := a.ConnectionStatus(r.Context(), k, r.PathValue("id"), r.URL.Query().Get("base_url"))
	answer(a, w, r, st, err, http.StatusOK)
}

// check serves POST /v1/connections/{id}/check: a live check run by the
// agent inside the customer network. A check that ran answers 200 with its
// verdict; a check that could not run (no tunnel, revoked, an agent
// without the operation) answers the error of the reason table.
func (a *API) check(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	if _, err := a.Visible(r.Context(), k, r.PathValue("id")); err != nil {
		a.fail(w, r, err)
		return
	}
	var req api.CheckRequest
	if e := decodeBody(r, &req); e != nil {
		reply.Error(w, r, e)
		return
	}
	out, err := a.Check(r.Context(), k, r.PathValue("id"), req.BaseURL, reply.RequestID(r))
	answer(a, w, r, out, err, http.StatusOK)
}

// connectionHistory serves GET /v1/connections/{id}/history?since=&limit=.
func (a *API) connectionHistory(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	q, e := historyQuery(r)
	if e != nil {
		reply.Error(w, r, e)
		return
	}
	h, err := a.History(r.Context(), k, r.PathValue("id"), q)
	answer(a, w, r, h, err, http.StatusOK)
}

// historyQuery reads since (RFC 3339) and limit (1 to history.MaxLimit).
func historyQuery(r *http.Request) (history.Query, *protocol.Error) {
	q := history.Query{Limit: history.DefaultLimit}
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return q, protocol.Errorf(protocol.InvalidRequest, "since: an RFC 3339 time required, like 2025-03-14T15:09:26Z")
		}
		q.Since = t
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > history.MaxLimit {
			return q, protocol.Errorf(protocol.InvalidRequest, "limit: a whole number from 1 to %d required", history.MaxLimit)
		}
		q.Limit = n
	}
	return q, nil
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

// StreamEvents streams status events as server-sent events, for key k
// (GET /v1/events, and the status page's live view). A workspace key sees
// its workspace's connections only; ?connection_id= narrows the stream to
// one connection the key may see. Last-Event-ID resumes after that event,
// or answers with a reset when it can no longer.
func (a *API) StreamEvents(w http.ResponseWriter, r *http.Request, k store.APIKey) {
	ctx, release := a.auth.Hold(r.Context(), k) // ends when k is revoked or expires
	defer release()
	r = r.WithContext(ctx)
	connID := r.URL.Query().Get("connection_id")
	if connID != "" {
		if _, err := a.Visible(r.Context(), k, connID); err != nil {
			a.fail(w, r, err)
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
			if errors.Is(context.Cause(r.Context()), auth.ErrKeyEnded) {
				a.log.Info("event stream ended: its API key was revoked or expired", "key", k.ID, "request_id", reply.RequestID(r))
				_ = st.Comment("api key revoked or expired")
			}
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

// keyStillValid ends the streams of a key revoked after they started
// where the revocation's cut did not reach (a node that missed it). A store
// that does not answer does not end them.
func (a *API) keyStillValid(ctx context.Context, k store.APIKey) bool {
	cur, err := a.store.GetAPIKey(ctx, k.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	return err != nil || auth.KeyEnded(cur, time.Now()) == nil
}
