package rootcmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// usageError is a command line that names no command: exit status 2, as
// for any other usage error.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) ExitCode() int { return 2 }

// refuseUnknownSubcommands makes every command that only holds
// subcommands (the root, `connections`, ...) refuse a word that names
// none of them, with the nearest names as a suggestion. Left to cobra, a
// group given an unknown word prints its help and exits 0, so a typo
// looks like success. A group given no word still prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		return unknownCommand(cmd, args[0])
	}
}

func unknownCommand(cmd *cobra.Command, word string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "unknown command %q for %q", word, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's own default for the root
	}
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		fmt.Fprintf(&b, "; did you mean %s?", strings.Join(s, " or "))
	}
	fmt.Fprintf(&b, "\nRun '%s --help' for its commands.", cmd.CommandPath())
	return &usageError{msg: b.String()}
}
