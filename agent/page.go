package agent

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
)

//go:embed page/*
var pageFiles embed.FS

// statusPage is the read-only page at / of status_listen: the facts of
// `postern-agent status`, for an admin with a browser on the machine. It
// refreshes itself every 10 s without a script.
var statusPage = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"since": func(seconds int64) string { return (time.Duration(seconds) * time.Second).String() },
	"ports": func(ps []string) string {
		if len(ps) == 0 {
			return "any"
		}
		return strings.Join(ps, ", ")
	},
}).ParseFS(pageFiles, "page/status.html"))

// pageData is LocalStatus with the refusal counts in a stable order.
type pageData struct {
	LocalStatus
	ByReason []reasonCount
}

type reasonCount struct {
	Reason protocol.Reason
	Count  int
}

func (a *Agent) servePage(w http.ResponseWriter, _ *http.Request) {
	st := a.Status()
	d := pageData{LocalStatus: st}
	for r, n := range st.Refusals {
		d.ByReason = append(d.ByReason, reasonCount{r, n})
	}
	sort.Slice(d.ByReason, func(i, j int) bool {
		if d.ByReason[i].Count != d.ByReason[j].Count {
			return d.ByReason[i].Count > d.ByReason[j].Count
		}
		return d.ByReason[i].Reason < d.ByReason[j].Reason
	})
	var buf bytes.Buffer
	if err := statusPage.Execute(&buf, d); err != nil {
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(buf.Bytes())
}

// routeDebug serves what a support bundle takes from the running agent:
// its newest log lines and goroutine and heap profiles. Only a client on
// the machine itself (loopback) gets them, whatever status_listen is.
func (a *Agent) routeDebug(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/logs", loopbackOnly(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if a.opts.RecentLogs == nil {
			return
		}
		for _, line := range a.opts.RecentLogs() {
			_, _ = w.Write([]byte(line + "\n"))
		}
	}))
	mux.HandleFunc("GET /debug/pprof/{profile}", loopbackOnly(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("profile")
		p := pprof.Lookup(name)
		if p == nil || (name != "goroutine" && name != "heap") {
			http.Error(w, "profiles: goroutine, heap", http.StatusNotFound)
			return
		}
		debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
		w.Header().Set("Content-Type", "application/octet-stream")
		if debug > 0 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		_ = p.WriteTo(w, min(max(debug, 0), 2))
	}))
}

// pageStyle serves page/page.css as /page.css.
func pageStyle() http.Handler {
	sub, _ := fs.Sub(pageFiles, "page") // "page" is embedded: Sub cannot fail
	return http.FileServerFS(sub)
}

// loopbackOnly refuses a client that is not on this machine.
func loopbackOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		addr, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || !addr.Unmap().IsLoopback() {
			http.Error(w, "only from the agent's own machine", http.StatusForbidden)
			return
		}
		next(w, r)
	}
}
