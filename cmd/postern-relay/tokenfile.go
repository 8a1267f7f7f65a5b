package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// tokenFile is --token-file PATH [--force] of the commands that issue an
// agent token: the token goes straight into a 0600 file for the agent's
// token_file, instead of onto the terminal.
type tokenFile struct {
	path  string
	force bool
	saved bool // the token was written; the answer printed has none
}

func (t *tokenFile) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.path, "token-file", "",
		"write the agent token to `PATH` (mode 0600) for the agent's token_file, instead of printing it")
	cmd.Flags().BoolVar(&t.force, "force", false, "with --token-file: replace an existing file")
	// Before the call, so a path that cannot take the token is refused
	// before a token is issued and lost.
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if prev != nil {
			if err := prev(cmd, args); err != nil {
				return err
			}
		}
		return t.check()
	}
}

func (t *tokenFile) check() error {
	if t.path == "" {
		if t.force {
			return errors.New("--force is for --token-file; without it the token is printed")
		}
		return nil
	}
	fi, err := os.Stat(t.path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("--token-file %s is a directory", t.path)
	case err == nil && !t.force:
		return fmt.Errorf("--token-file %s exists; pass --force to replace it", t.path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--token-file: %w", err)
	}
	if dir, err := os.Stat(filepath.Dir(t.path)); err != nil || !dir.IsDir() {
		return fmt.Errorf("--token-file %s: directory %s does not exist", t.path, filepath.Dir(t.path))
	}
	return nil
}

// takeFrom takes *token (see take) and empties it once it is in the file.
func (t *tokenFile) takeFrom(token *string) error {
	saved, err := t.take(*token)
	if saved {
		*token = ""
	}
	return err
}

// take writes token to the file, when --token-file is set, and says
// whether it did; the caller then drops the token from what it prints.
// The file is written beside its final name and renamed into place, so an
// agent never reads half a token.
func (t *tokenFile) take(token string) (bool, error) {
	if t.path == "" {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(t.path), ".postern-token-*")
	if err != nil {
		return false, t.lost(err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	// CreateTemp makes it 0600; Chmod says so for any umask.
	err = errors.Join(tmp.Chmod(0o600), writeAll(tmp, token+"\n"), tmp.Sync(), tmp.Close())
	if err == nil && !t.force {
		// Link fails if the name exists: no race with another writer.
		err = os.Link(tmp.Name(), t.path)
	} else if err == nil {
		err = os.Rename(tmp.Name(), t.path)
	}
	if err != nil {
		return false, t.lost(err)
	}
	t.saved = true
	return true, nil
}

func writeAll(w io.Writer, s string) error {
	_, err := io.WriteString(w, s)
	return err
}

func (t *tokenFile) lost(err error) error {
	return fmt.Errorf("write --token-file %s: %w; the token was issued but not saved: issue another with `connections rotate-token ID --token-file PATH`", t.path, err)
}

// printSaved prints the answer's fields, where the token went, and then
// the command's own notice.
func (t *tokenFile) printSaved(w io.Writer, fields []field, then string) error {
	abs, err := filepath.Abs(t.path)
	if err != nil {
		abs = t.path
	}
	return printWithNotice(w, append(fields, field{"agent token", "written to " + abs + " (mode 0600)"}),
		"\nThe token belongs in the agent's token_file: set `token_file: "+abs+"` in agent.yaml\n"+
			"(or `postern-agent install --token-file "+abs+"`), then delete any other copy.\n"+then)
}
