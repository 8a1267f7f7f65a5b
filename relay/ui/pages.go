package ui

import (
	"bytes"
	"context"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/relay/admin"
	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/history"
	"github.com/postern/postern/relay/reply"
	"github.com/postern/postern/relay/store"
)

// pageNames are the templates, each rendered inside layout.html.
var pageNames = []string{"signin", "list", "connection", "confirm", "token", "error"}

func parsePages() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// page is what every template gets: the visitor (nil before sign-in), the
// page's own data, and the foot.
type page struct {
	Title   string
	V       *visitor
	Live    string // the event stream the script follows; "" for none
	Node    string
	Version string
	Data    any
}

// render writes a page; a template that fails answers 500 without a
// half-written page.
func (u *UI) render(w http.ResponseWriter, status int, name string, p page) {
	p.Node, p.Version = u.cfg.NodeID, u.cfg.Version
	var buf bytes.Buffer
	if err := u.pages[name].Execute(&buf, p); err != nil {
		u.p.Log.Error("status page: render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// failure is the error page's data: the API's refusal, as the API would
// answer it.
type failure struct {
	Err *protocol.Error
}

// fail answers with the API's refusal as a page: its status, its
// Postern-Reason and its reason code with the remediation.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, v *visitor, e *protocol.Error) {
	w.Header().Set("Postern-Reason", string(e.Reason))
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	u.render(w, e.Status(), "error", page{Title: string(e.Reason), V: v, Data: failure{Err: e}})
}

// forbidden answers a form posted without its CSRF token.
func (u *UI) forbidden(w http.ResponseWriter, r *http.Request, v *visitor) {
	u.fail(w, r, v, protocol.Errorf(protocol.Forbidden, "the form was sent without its CSRF token: reload the page and try again"))
}

// safeNext is where to go after signing in: a page of the status page
// only.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "/ui/signin") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}

// signInForm is the sign-in page's data.
type signInForm struct {
	CSRF, Next, Error string
	SignedOut         bool
}

func (u *UI) signInPage(w http.ResponseWriter, r *http.Request) {
	if _, err := u.visitor(r); err == nil {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	u.showSignIn(w, r, http.StatusOK, "")
}

// showSignIn renders the sign-in form with a fresh double-submit token.
func (u *UI) showSignIn(w http.ResponseWriter, r *http.Request, status int, problem string) {
	token := reply.NewID(16)
	u.setCookie(w, r, signInCookie, token, time.Now().Add(time.Hour))
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostFormValue("next")
	}
	u.render(w, status, "signin", page{Title: "Sign in", Data: signInForm{
		CSRF: token, Next: safeNext(next), Error: problem, SignedOut: r.URL.Query().Get("out") == "1",
	}})
}

// signIn checks the key of the form through the API's authenticator (its
// limits on refused credentials apply) and starts a session for it.
func (u *UI) signIn(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(signInCookie)
	if err != nil || c.Value == "" || r.PostFormValue("csrf") != c.Value {
		u.fail(w, r, nil, protocol.Errorf(protocol.Forbidden, "the sign-in form was sent without its CSRF token: reload the page and try again"))
		return
	}
	asKey := r.Clone(r.Context())
	asKey.Header = r.Header.Clone()
	asKey.Header.Set("Authorization", "Bearer "+strings.TrimSpace(r.PostFormValue("key")))
	k, e := u.p.Auth.APIKey(asKey)
	if e != nil {
		problem := "That API key is unknown, wrong, revoked or expired."
		if e.Reason != protocol.APIAuthRequired {
			problem = string(e.Reason) + ": " + e.Message
		}
		if e.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
		}
		u.showSignIn(w, r, e.Status(), problem)
		return
	}
	ss := u.sessions.start(k.ID, time.Now())
	u.setCookie(w, r, sessionCookie, u.sessions.cookieValue(ss), ss.until)
	u.setCookie(w, r, signInCookie, "", time.Time{})
	u.p.Log.Info("status page: signed in", "key", k.ID, "admin", k.Admin, "workspace", k.Workspace, "remote", r.RemoteAddr)
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (u *UI) signOut(w http.ResponseWriter, r *http.Request, v visitor) {
	u.sessions.signOut(v.Session.id, v.Session.until)
	if u.p.SignedOut != nil {
		u.p.SignedOut(context.WithoutCancel(r.Context()), v.Session.id, v.Session.until)
	}
	u.setCookie(w, r, sessionCookie, "", time.Time{})
	u.p.Log.Info("status page: signed out", "key", v.Key.ID)
	http.Redirect(w, r, "/ui/signin?out=1", http.StatusSeeOther)
}

// events streams the visitor's status events to the page's script,
// exactly as GET /v1/events would for the key, until the session ends.
func (u *UI) events(w http.ResponseWriter, r *http.Request, v visitor) {
	ctx, cancel := context.WithDeadline(r.Context(), v.Session.until)
	defer cancel()
	u.p.API.StreamEvents(w, r.WithContext(ctx), v.Key)
}

// row is one connection of the list.
type row struct {
	Conn    store.Connection
	Status  api.Status
	Uptime  api.Uptime
	Tunnels int
	Nodes   []string
}

// listing is the list page's data.
type listing struct {
	Rows        []row
	Query       string
	State       string
	States      []string
	Total, Left int
	Problem     *protocol.Error
}

// maxRows bounds the list; a search narrows it.
const maxRows = 500

// filterStates are the choices of the list's state filter.
var filterStates = []string{"ready", "not ready", "connected", "degraded", "flapping", "disconnected", "never_connected", "revoked"}

func (u *UI) listPage(w http.ResponseWriter, r *http.Request, v visitor) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	state := r.URL.Query().Get("state")
	if !slices.Contains(filterStates, state) {
		state = ""
	}
	cs, err := u.p.API.Connections(r.Context(), v.Key, "")
	if err != nil {
		u.fail(w, r, &v, admin.Refusal(err))
		return
	}
	out := listing{Query: q, State: state, States: filterStates, Total: len(cs), Rows: []row{}}
	for _, c := range cs {
		if !matches(c, q) {
			continue
		}
		rw, err := u.row(r.Context(), v, c)
		if err != nil {
			out.Problem = admin.Refusal(err)
			break
		}
		if !inState(rw.Status, state) {
			continue
		}
		if len(out.Rows) == maxRows {
			out.Left++
			continue
		}
		out.Rows = append(out.Rows, rw)
	}
	u.render(w, http.StatusOK, "list", page{Title: "Connections", V: &v, Live: "/ui/events", Data: out})
}

// row is connection c's line of the list.
func (u *UI) row(ctx context.Context, v visitor, c store.Connection) (row, error) {
	st, err := u.p.API.Status(ctx, v.Key, c)
	if err != nil {
		return row{}, err
	}
	up, err := u.p.API.Uptime(ctx, v.Key, c, st)
	if err != nil {
		return row{}, err
	}
	rw := row{Conn: c, Status: st, Uptime: up}
	for _, a := range st.Agents {
		rw.Tunnels += a.Tunnels
		for _, s := range a.Sessions {
			if !slices.Contains(rw.Nodes, s.RelayNode) {
				rw.Nodes = append(rw.Nodes, s.RelayNode)
			}
		}
	}
	return rw, nil
}

// matches is the search: the words of q in a connection's name, id or
// workspace, in any case.
func matches(c store.Connection, q string) bool {
	hay := strings.ToLower(c.Name + " " + c.ID + " " + c.Workspace)
	for _, word := range strings.Fields(strings.ToLower(q)) {
		if !strings.Contains(hay, word) {
			return false
		}
	}
	return true
}

// inState is the state filter: readiness, or a tunnel_status.
func inState(st api.Status, state string) bool {
	switch state {
	case "":
		return true
	case "ready":
		return st.Ready
	case "not ready":
		return !st.Ready
	}
	return st.TunnelStatus == state
}

// detail is the connection page's data.
type detail struct {
	Conn     store.Connection
	Status   api.Status
	History  api.History
	Timeline []api.HistoryEntry // newest first
	BaseURL  string
	Check    *api.Check
	CheckErr *protocol.Error
	Notice   string
	Problem  *protocol.Error
}

// timelineLength is how many transitions the page shows.
const timelineLength = 100

// loadDetail reads what the connection page shows of connection id.
func (u *UI) loadDetail(ctx context.Context, v visitor, id string) (detail, error) {
	c, err := u.p.API.Visible(ctx, v.Key, id)
	if err != nil {
		return detail{}, err
	}
	st, err := u.p.API.Status(ctx, v.Key, c)
	if err != nil {
		return detail{}, err
	}
	d := detail{Conn: c, Status: st}
	h, err := u.p.API.History(ctx, v.Key, id, history.Query{Limit: timelineLength})
	if err != nil {
		d.Problem = admin.Refusal(err)
		return d, nil
	}
	d.History = h
	for i := len(h.Transitions) - 1; i >= 0; i-- {
		d.Timeline = append(d.Timeline, h.Transitions[i])
	}
	return d, nil
}

func (u *UI) connectionPage(w http.ResponseWriter, r *http.Request, v visitor) {
	d, err := u.loadDetail(r.Context(), v, r.PathValue("id"))
	if err != nil {
		u.fail(w, r, &v, admin.Refusal(err))
		return
	}
	d.Notice = noticeOf(r.URL.Query().Get("done"))
	u.showDetail(w, http.StatusOK, v, d)
}

func (u *UI) showDetail(w http.ResponseWriter, status int, v visitor, d detail) {
	live := "/ui/events?connection_id=" + url.QueryEscape(d.Conn.ID)
	u.render(w, status, "connection", page{Title: d.Conn.Name, V: &v, Live: live, Data: d})
}

// noticeOf is the line a page shows after a change it redirected from.
func noticeOf(done string) string {
	switch done {
	case "revoked":
		return "The connection was revoked: its tunnels are closed and its agents cannot connect again."
	}
	return ""
}

// checkForm runs a live check from the page and shows its steps.
func (u *UI) checkForm(w http.ResponseWriter, r *http.Request, v visitor) {
	id := r.PathValue("id")
	baseURL := strings.TrimSpace(r.PostFormValue("base_url"))
	check, err := u.p.API.Check(r.Context(), v.Key, id, baseURL, reply.NewID(8))
	d, derr := u.loadDetail(r.Context(), v, id)
	if derr != nil {
		u.fail(w, r, &v, admin.Refusal(derr))
		return
	}
	d.BaseURL = baseURL
	if err != nil {
		d.CheckErr = admin.Refusal(err)
	} else {
		d.Check = &check
	}
	u.showDetail(w, http.StatusOK, v, d)
}

// confirmation is the page that asks before a change.
type confirmation struct {
	Conn           store.Connection
	Action         string // revoke | rotate
	ExpirePrevious bool
}

// revokeForm asks first; the confirmed form revokes and goes back to the
// connection's page.
func (u *UI) revokeForm(w http.ResponseWriter, r *http.Request, v visitor) {
	c, ok := u.manageable(w, r, v)
	if !ok {
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		u.render(w, http.StatusOK, "confirm", page{Title: "Revoke " + c.Name, V: &v, Data: confirmation{Conn: c, Action: "revoke"}})
		return
	}
	if _, err := u.p.API.Revoke(r.Context(), v.Key, c.ID); err != nil {
		u.fail(w, r, &v, admin.Refusal(err))
		return
	}
	http.Redirect(w, r, "/ui/connections/"+url.PathEscape(c.ID)+"?done=revoked", http.StatusSeeOther)
}

// issued is the page that shows a new agent token, once.
type issued struct {
	Conn  store.Connection
	Token api.TokenResponse
}

// rotateForm asks first; the confirmed form issues a token and shows it
// once.
func (u *UI) rotateForm(w http.ResponseWriter, r *http.Request, v visitor) {
	c, ok := u.manageable(w, r, v)
	if !ok {
		return
	}
	expire := r.PostFormValue("expire_previous") == "yes"
	if r.PostFormValue("confirm") != "yes" {
		u.render(w, http.StatusOK, "confirm", page{Title: "Rotate the token of " + c.Name, V: &v,
			Data: confirmation{Conn: c, Action: "rotate", ExpirePrevious: expire}})
		return
	}
	tok, err := u.p.API.Rotate(r.Context(), v.Key, c.ID, api.RotateTokenRequest{ExpirePrevious: expire})
	if err != nil {
		u.fail(w, r, &v, admin.Refusal(err))
		return
	}
	u.render(w, http.StatusOK, "token", page{Title: "New agent token", V: &v, Data: issued{Conn: c, Token: tok}})
}

// manageable loads the form's connection for a change: the key must see
// it and be an admin key, exactly as in the API.
func (u *UI) manageable(w http.ResponseWriter, r *http.Request, v visitor) (store.Connection, bool) {
	c, err := u.p.API.Manageable(r.Context(), v.Key, r.PathValue("id"))
	if err != nil {
		u.fail(w, r, &v, admin.Refusal(err))
		return store.Connection{}, false
	}
	return c, true
}
