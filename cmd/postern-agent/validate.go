package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/protocol"
)

type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) ExitCode() int { return e.code }

func newValidateCmd() *cobra.Command {
	var cfgPath, explain string
	cmd := command("validate --config FILE [--explain HOST:PORT]",
		"Check a config file and list every problem with its line",
		func(cmd *cobra.Command) error {
			out := cmd.OutOrStdout()
			cfg, err := config.Load(cfgPath, os.LookupEnv)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return &exitError{code: 2, msg: cfgPath + " is invalid"}
			}
			allow, deny := cfg.Rules.Specs()
			fmt.Fprintf(out, "%s: ok (%d allow, %d deny rules, mode %s, sha256 %s)\n",
				cfgPath, len(allow), len(deny), cfg.Mode, cfg.Rules.SHA256())
			if blocked := cfg.Rules.Blocked(); len(blocked) > 0 {
				addrs := make([]string, len(blocked))
				for i, b := range blocked {
					addrs[i] = b.Addr
				}
				fmt.Fprintf(out, "blocked: %s (and the built-in always-blocked set)\n", strings.Join(addrs, ", "))
			}
			if len(allow) == 0 {
				fmt.Fprintln(out, "warning: no allow rules: every target will be refused")
			}
			for _, w := range cfg.Warnings() {
				fmt.Fprintln(out, "warning:", w)
			}
			// A token that run would refuse fails validate too; one not
			// installed yet (or not readable by this user) is run's to name.
			if _, err := cfg.LoadToken(os.LookupEnv); errors.Is(err, protocol.ErrTokenShape) {
				return &exitError{code: 2, msg: err.Error()}
			}
			if explain == "" {
				return nil
			}
			host, p, err := net.SplitHostPort(explain)
			if err != nil {
				return fmt.Errorf("--explain %q: want HOST:PORT", explain)
			}
			port, err := strconv.Atoi(p)
			if err != nil {
				return fmt.Errorf("--explain %q: port is not a number", explain)
			}
			d := cfg.Rules.Decide(host, port)
			rule := d.Rule
			if rule == "" {
				rule = "(none)"
			}
			fmt.Fprintf(out, "%s: %s\nrule: %s\nreason: %s\n", explain, d.Verdict, rule, d.Reason)
			if !d.Allowed() {
				return &exitError{code: 3, msg: explain + " would be refused"}
			}
			return nil
		})
	configFlag(cmd, &cfgPath, "agent config file")
	cmd.Flags().StringVar(&explain, "explain", "", "show the decision for HOST:PORT")
	return cmd
}
