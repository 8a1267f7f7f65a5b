package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/postern/postern/agent/doctor"
)

func newDoctorCmd() *cobra.Command {
	var (
		cfgPath string
		asJSON  bool
	)
	cmd := command("doctor [--config FILE] [--json]",
		"Check config, token, the path to the relay and the allowlisted targets, layer by layer",
		func(cmd *cobra.Command) error {
			rep := doctor.Run(cmd.Context(), doctor.Options{
				ConfigPath: cfgPath,
				Getenv:     os.LookupEnv,
				Version:    version,
			})
			out := cmd.OutOrStdout()
			var err error
			if asJSON {
				err = rep.WriteJSON(out)
			} else {
				err = rep.WriteText(out)
			}
			if err != nil {
				return err
			}
			if !rep.OK {
				return &exitError{code: 1, msg: fmt.Sprintf("doctor: %d of %d checks failed", len(rep.Failed()), len(rep.Checks))}
			}
			return nil
		})
	cmd.Long = "doctor checks, in order: the config file, the token file, and for each relay_url its DNS,\n" +
		"the egress proxy, TCP, TLS (showing the certificate's issuer), the WebSocket upgrade, the token\n" +
		"and the Hello/Welcome handshake; then DNS, TCP and TLS for each allow rule's target.\n" +
		"Each check prints PASS, WARN, FAIL or SKIP; a failure says what to do. Exit status 1 if any check failed."
	// A failed check is not a usage error; main prints the summary.
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	configFlag(cmd, &cfgPath, "agent config file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as one JSON document")
	return cmd
}
