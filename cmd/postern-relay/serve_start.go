package main

import (
	"log/slog"
	"net"

	"github.com/postern/postern/relay"
)

// warnPlaintext logs a warning for every listener that is reachable from
// other machines and speaks plain HTTP: agent tokens, API keys and the
// tunnelled bytes would cross the network readable. Behind a proxy that
// ends TLS this is expected; the warning says so.
func warnPlaintext(log *slog.Logger, cfg serveConfig, ls relay.Listeners) {
	if cfg.TLSCert != "" {
		return
	}
	for _, l := range []struct {
		name string
		ln   net.Listener
	}{{"api", ls.API}, {"proxy", ls.Proxy}, {"peer", ls.Peer}} {
		if l.ln == nil || loopbackOnly(l.ln.Addr()) {
			continue
		}
		log.Warn("listening without TLS on an address other machines can reach: tokens, API keys and "+
			"tunnelled bytes cross the network in clear text; set --tls-cert and --tls-key, "+
			"or keep this listener behind a proxy that ends TLS",
			"listener", l.name, "addr", l.ln.Addr().String())
	}
}

// loopbackOnly says whether addr is bound to a loopback address (not the
// unspecified one, which is every address).
func loopbackOnly(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// closeListeners closes what serve opened when it gives up before serving.
func closeListeners(ls relay.Listeners) {
	for _, ln := range []net.Listener{ls.API, ls.Proxy, ls.Peer} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}
