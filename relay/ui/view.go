package ui

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/postern/postern/protocol"
)

// The words of the status API, each shown with a symbol and a word so
// that colour is never the only signal. good, warn and bad pick the
// colour; the symbol and the word say the same without it.
var states = map[string]badge{
	"connected":       {"✓", "good"},
	"active":          {"✓", "good"},
	"allowed":         {"✓", "good"},
	"configured":      {"✓", "good"},
	"ready":           {"✓", "good"},
	"ok":              {"✓", "good"},
	"degraded":        {"!", "warn"},
	"flapping":        {"!", "warn"},
	"failing":         {"✕", "bad"},
	"disconnected":    {"✕", "bad"},
	"never_connected": {"✕", "bad"},
	"revoked":         {"✕", "bad"},
	"missing":         {"✕", "bad"},
	"blocked":         {"✕", "bad"},
	"bad_target":      {"✕", "bad"},
	"invalid":         {"✕", "bad"},
	"empty":           {"!", "warn"},
	"not ready":       {"✕", "bad"},
	"unknown":         {"?", "none"},
}

// badge is how one state word is shown.
type badge struct{ Symbol, Class string }

// shownState is a state word with its badge, for the templates.
type shownState struct {
	Word, Symbol, Class string
}

func stateOf(word string) shownState {
	b, ok := states[word]
	if !ok {
		b = badge{"?", "none"}
	}
	return shownState{Word: word, Symbol: b.Symbol, Class: b.Class}
}

// remedies are the one-line remediations of docs/operations.md's
// diagnosis table ("what the admin should do"), word for word; a test
// holds them to the table. Every reason also shows its meaning from the
// reason table.
var remedies = map[protocol.Reason]string{
	protocol.AgentNeverConnected: "Start the agent (`postern-agent start`, or `run --config FILE`).",
	protocol.AgentOffline:        "Start the agent again and read its log or service status for why it stopped.",
	protocol.AgentAuthFailed:     "Install the connection's current token in `token_file`, or rotate it and install the new one.",
	protocol.ConnectionRevoked:   "Revocation is final: create a new connection and install its token.",
	protocol.AllowlistMissing:    "Add an allow rule for host and port if the product should reach it.",
	protocol.TargetBlocked:       "Remove or narrow the deny rule if the target should be reachable; otherwise it works as intended.",
	protocol.DNSNXDomain:         "Add the DNS record, or correct the host name in the product and the allow rule.",
	protocol.DNSServFail:         "Repair the DNS server (`dns.servers`, or resolv.conf) that fails for that zone.",
	protocol.DNSTimeout:          "Make `dns.servers` reachable from the agent (UDP and TCP 53), or point it at working servers.",
	protocol.ConnectRefused:      "Start the service, or correct the port in the product's base URL and the allow rule.",
	protocol.ConnectTimeout:      "Open the firewall between the agent and the target, or bring the host up.",
	protocol.TLSFailed:           "Give the provider a certificate from a CA the product trusts, or give the product (and the agent's `ca_file`) that CA.",
	protocol.UpstreamRateLimited: "Nothing on the network path: the provider is throttling; wait `retry_after`, or raise the provider's rate limit.",
}

// flappingRemedy is the diagnosis table's row for a flapping tunnel.
const flappingRemedy = "Find out why the agent's tunnels keep dropping: read its log and run `postern-agent doctor`; look for a proxy or firewall that cuts long-lived connections."

// remedy renders the remediation of a reason, `code` spans as <code>;
// "" for a reason the diagnosis table does not list.
func remedy(r protocol.Reason) template.HTML {
	text, ok := remedies[r]
	if !ok {
		return ""
	}
	return codeSpans(text)
}

// codeSpans escapes text and renders its `code` spans.
func codeSpans(text string) template.HTML {
	var b strings.Builder
	for i, part := range strings.Split(text, "`") {
		esc := template.HTMLEscapeString(part)
		if i%2 == 1 {
			esc = "<code>" + esc + "</code>"
		}
		b.WriteString(esc)
	}
	return template.HTML(b.String()) //nolint:gosec // every part is escaped above
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"state":      stateOf,
	"remedy":     remedy,
	"flapRemedy": func() template.HTML { return codeSpans(flappingRemedy) },
	"summary":    func(r protocol.Reason) string { return r.Info().Summary },
	"when":       when,
	"ago":        ago,
	"dur":        func(n any) string { return duration(seconds(n)) },
	"pct":        percent,
	"join":       strings.Join,
}

// when is a time as the page shows it, in UTC.
func when(t any) string {
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return "—"
		}
		return v.UTC().Format("2006-01-02 15:04:05 UTC")
	case *time.Time:
		if v == nil {
			return "—"
		}
		return when(*v)
	}
	return "—"
}

// ago is how long ago a time was, roughly.
func ago(t any) string {
	var at time.Time
	switch v := t.(type) {
	case time.Time:
		at = v
	case *time.Time:
		if v == nil {
			return ""
		}
		at = *v
	}
	if at.IsZero() {
		return ""
	}
	return duration(time.Since(at).Seconds()) + " ago"
}

// seconds reads a number of seconds of any of the API's number types.
func seconds(n any) float64 {
	switch v := n.(type) {
	case float64:
		return v
	case int64:
		return float64(v)
	case int:
		return float64(v)
	}
	return 0
}

// duration renders seconds as the two largest units that matter.
func duration(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// percent renders a ratio as a percentage, never rounding up to 100.
func percent(ratio float64) string {
	p := math.Floor(ratio*1000) / 10
	return fmt.Sprintf("%.1f%%", p)
}
