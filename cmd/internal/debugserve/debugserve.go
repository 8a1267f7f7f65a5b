// Package debugserve serves the Go runtime's profiles (net/http/pprof) of
// a running postern-relay or postern-agent, for performance work: `make
// profile` collects them under load.
//
// It is off unless the environment variable POSTERN_DEBUG_LISTEN names an
// address, and it listens only on loopback: profiles show what the process
// is doing and hold pieces of its memory, so they are never offered to a
// network. It registers nothing on http.DefaultServeMux.
package debugserve

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"
)

// EnvVar names the loopback address (host:port) to serve profiles on.
const EnvVar = "POSTERN_DEBUG_LISTEN"

// maxProfileSeconds bounds how long one CPU profile or trace may run, so a
// request cannot hold the listener for long.
const maxProfileSeconds = 60

// Start serves profiles on the address in EnvVar, if it is set; stop ends
// the server and waits for it. Without EnvVar it does nothing.
func Start(log *slog.Logger) (stop func(), err error) {
	addr := os.Getenv(EnvVar)
	if addr == "" {
		return func() {}, nil
	}
	if err := checkLoopback(addr); err != nil {
		return nil, fmt.Errorf("%s=%q: %w", EnvVar, addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvVar, err)
	}
	srv := &http.Server{
		Handler:           handler(),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      (maxProfileSeconds + 10) * time.Second,
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	log.Warn("serving runtime profiles on loopback (POSTERN_DEBUG_LISTEN); unset it outside performance work", "addr", ln.Addr().String())
	return func() { _ = srv.Close(); wg.Wait() }, nil
}

// checkLoopback accepts host:port whose host is a loopback IP or
// "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("profiles are served on a loopback address only (127.0.0.1:PORT, [::1]:PORT or localhost:PORT)")
	}
	return nil
}

// handler routes /debug/pprof/ as net/http/pprof does, on its own mux,
// with the length of CPU profiles and traces bounded.
func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.Handle("/debug/pprof/profile", bounded(http.HandlerFunc(pprof.Profile)))
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.Handle("/debug/pprof/trace", bounded(http.HandlerFunc(pprof.Trace)))
	return mux
}

// bounded refuses a ?seconds= beyond maxProfileSeconds.
func bounded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s int
		if v := r.URL.Query().Get("seconds"); v != "" {
			if _, err := fmt.Sscanf(v, "%d", &s); err != nil || s < 0 || s > maxProfileSeconds {
				http.Error(w, fmt.Sprintf("seconds %q: must be 0 to %d", v, maxProfileSeconds), http.StatusBadRequest)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
