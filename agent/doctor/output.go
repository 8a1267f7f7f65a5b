package doctor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// layerWidth aligns the detail column of the text output.
const layerWidth = 16

// WriteText prints the report for a terminal, one line per check:
//
//	PASS  config          /etc/postern/agent.yaml: 3 allow rules, mode enforce
//	FAIL  relay tcp       relay.example.com:443: connection refused (12ms)
//	      -> check that the relay is up and that outbound TCP 443 to relay.example.com is allowed by your firewall
//
// and a closing line with the verdict.
func (r Report) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, c := range r.Checks {
		lines := strings.Split(c.Detail, "\n")
		head := lines[0]
		if c.Target != "" {
			head = c.Target + ": " + head
		}
		if c.timed && c.Status != Skip {
			head += fmt.Sprintf(" (%dms)", c.Duration.Milliseconds())
		}
		if c.Reason != "" && c.Status != Pass && !strings.Contains(head, string(c.Reason)) {
			head += " [" + string(c.Reason) + "]"
		}
		fmt.Fprintf(bw, "%-4s  %-*s %s\n", c.Status, layerWidth, c.Layer, head)
		for _, l := range lines[1:] {
			fmt.Fprintf(bw, "      %s\n", l)
		}
		if c.Remediation != "" && (c.Status == Fail || c.Status == Warn) {
			fmt.Fprintf(bw, "      -> %s\n", c.Remediation)
		}
	}
	if failed := r.Failed(); len(failed) > 0 {
		fmt.Fprintf(bw, "\n%s failed; the first failure is the likeliest cause.\n", plural(len(failed), "check"))
	} else {
		fmt.Fprintln(bw, "\nall checks passed.")
	}
	return bw.Flush()
}

// WriteJSON prints the report as one JSON document:
// {"ok": bool, "checks": [{"layer","target","status","ms","detail","reason","remediation"}]}.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
