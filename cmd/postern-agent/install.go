package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/postern/postern/installer"
)

// newServiceCmds returns install, uninstall, start, stop and restart, which
// manage the agent as a system service on this machine.
func newServiceCmds() []*cobra.Command {
	return serviceCmds(func(log *slog.Logger) *installer.Installer {
		return installer.New(installer.Options{Logger: log})
	})
}

// serviceCmds builds the commands around newInstaller, which tests point at
// a temporary root and a fake service manager.
func serviceCmds(newInstaller func(*slog.Logger) *installer.Installer) []*cobra.Command {
	warnings := func(cmd *cobra.Command) *slog.Logger {
		return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}

	var cfgPath, tokenFile string
	install := command("install [--config FILE] [--token-file FILE]",
		"Install or update the agent as a system service (needs root)",
		func(cmd *cobra.Command) error {
			r, err := newInstaller(warnings(cmd)).Install(cmd.Context(), installer.InstallRequest{Config: cfgPath, TokenFile: tokenFile})
			out := cmd.OutOrStdout()
			printReport(out, r)
			if err != nil {
				return err
			}
			switch {
			case r.Restarted:
				fmt.Fprintln(out, "updated; the running service was restarted")
			case len(r.Changed) == 0:
				fmt.Fprintln(out, "already installed and up to date")
			default:
				fmt.Fprintln(out, "installed; start it with: postern-agent start")
			}
			return nil
		})
	install.Long = `Validate the config, then install it, the agent token, the binary and a hardened
service definition, and register the service. Running it again updates an
existing install and restarts the service if it is running.

The token comes from --token-file, else the environment variable
POSTERN_AGENT_TOKEN, else the config's token_file, else the installed token is
kept. It is never printed and never accepted as a command-line value.`
	install.Flags().StringVar(&cfgPath, "config", "", "agent config to install (default: the installed /etc/postern/agent.yaml)")
	install.Flags().StringVar(&tokenFile, "token-file", "", "file holding the agent token to install")

	var purge bool
	uninstall := command("uninstall [--purge]",
		"Stop the service and remove it; --purge also deletes config, token, state and binary",
		func(cmd *cobra.Command) error {
			r, err := newInstaller(warnings(cmd)).Uninstall(cmd.Context(), purge)
			printReport(cmd.OutOrStdout(), r)
			return err
		})
	uninstall.Flags().BoolVar(&purge, "purge", false, "also delete config, token, environment file, state directory and binary")

	control := func(a installer.Action, short string) *cobra.Command {
		return command(string(a), short, func(cmd *cobra.Command) error {
			in := newInstaller(warnings(cmd))
			if err := in.Control(cmd.Context(), a); err != nil {
				return err
			}
			st, err := in.State(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", installer.ServiceName, st)
			return nil
		})
	}
	return []*cobra.Command{
		install,
		uninstall,
		control(installer.ActionStart, "Start the installed service"),
		control(installer.ActionStop, "Stop the installed service"),
		control(installer.ActionRestart, "Restart the installed service"),
	}
}

func printReport(w io.Writer, r *installer.Report) {
	if r == nil {
		return
	}
	for _, c := range r.Changed {
		fmt.Fprintln(w, "  +", c)
	}
	for _, k := range r.Kept {
		fmt.Fprintln(w, "  kept", k)
	}
}
