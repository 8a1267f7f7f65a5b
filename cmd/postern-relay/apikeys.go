package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
	"github.com/postern/postern/relay/secret"
)

// lifetime is the value of --expires-in: a Go duration (12h, 30m) or a
// number of days (90d). Unset, a key never expires.
type lifetime struct{ d time.Duration }

func (l *lifetime) String() string {
	if l.d == 0 {
		return ""
	}
	return l.d.String()
}

func (l *lifetime) Type() string { return "duration" }

func (l *lifetime) Set(s string) error {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return fmt.Errorf("%q: want a number of days (90d) or a duration (12h)", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("%q: want a number of days (90d) or a duration (12h)", s)
		}
	}
	const most = 3650 * 24 * time.Hour
	if d <= 0 || d > most {
		return fmt.Errorf("%q: want more than 0 and at most 3650d", s)
	}
	l.d = d
	return nil
}

// from is the expiry the lifetime gives a key created at now; nil when
// unset.
func (l *lifetime) from(now time.Time) *time.Time {
	if l.d == 0 {
		return nil
	}
	at := now.Add(l.d).UTC().Truncate(time.Second)
	return &at
}

func (e adminEnv) keyListCmd(f *adminFlags) *cobra.Command {
	return apiCall[api.APIKeyList]{
		call: func(ctx context.Context, c *client.Client, _ []string) (api.APIKeyList, error) {
			return c.ListAPIKeys(ctx)
		},
		text: printAPIKeyList,
	}.command(e, f, &cobra.Command{
		Use:   "list",
		Short: "List API keys (never their secrets), revoked and expired ones too",
		Args:  cobra.NoArgs,
	})
}

func printAPIKeyList(w io.Writer, list api.APIKeyList) error {
	now := time.Now()
	rows := make([][]string, len(list.APIKeys))
	for i, k := range list.APIKeys {
		expires := "never"
		if k.ExpiresAt != nil {
			expires = formatTime(*k.ExpiresAt)
		}
		used := "never"
		if k.LastUsedAt != nil {
			used = formatTime(*k.LastUsedAt)
		}
		rows[i] = []string{clean(k.ID), clean(k.Name), keyScope(k), formatTime(k.CreatedAt), expires, used, keyState(k, now)}
	}
	return printTable(w, "No API keys.", "ID\tNAME\tSCOPE\tCREATED\tEXPIRES\tLAST USED\tSTATE", rows)
}

func keyScope(k api.APIKey) string {
	if k.Admin {
		return "admin"
	}
	return "workspace " + clean(k.Workspace)
}

func keyState(k api.APIKey, now time.Time) string {
	switch {
	case k.RevokedAt != nil:
		return "revoked " + formatTime(*k.RevokedAt)
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return "expired"
	}
	return "active"
}

func (e adminEnv) keyRevokeCmd(f *adminFlags) *cobra.Command {
	return apiCall[api.APIKey]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.APIKey, error) {
			return c.RevokeAPIKey(ctx, args[0])
		},
		text: func(w io.Writer, k api.APIKey) error {
			return printWithNotice(w, []field{{"id", k.ID}, {"name", k.Name}, {"scope", keyScope(k)},
				{"state", keyState(k, time.Now())}},
				"\nThe key is refused from now on; the proxy and event streams it had open were closed.\n")
		},
	}.command(e, f, &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key: it is refused from now on and its open streams are closed",
		Args:  cobra.ExactArgs(1),
	})
}

// rotation is what rotate-admin did: the new key (its secret only in the
// file) and the old one, revoked.
type rotation struct {
	New     api.APIKey `json:"new"`
	KeyFile string     `json:"key_file"`
	Revoked api.APIKey `json:"revoked"`
}

func (e adminEnv) keyRotateAdminCmd(f *adminFlags) *cobra.Command {
	var (
		out, name string
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "rotate-admin [--out FILE]",
		Short: "Replace the admin key in use: a new admin key is written to a file, then the old one is revoked",
		Long: "Creates a new admin key with the admin key in use, writes it (mode 0600) to --out, or over\n" +
			"--admin-key-file when --out is not given, checks that it works, and revokes the old key with it.\n" +
			"The new key is never printed. Use it to replace the bootstrap key in <data dir>/admin.key.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		r, err := e.rotateAdmin(cmd.Context(), f, out, name)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), r)
		}
		return printWithNotice(cmd.OutOrStdout(), []field{{"new key", r.New.ID}, {"written to", r.KeyFile},
			{"revoked key", r.Revoked.ID}}, "\nThe old key is refused from now on; use the key in "+r.KeyFile+".\n")
	}
	cmd.Flags().StringVar(&out, "out", "", "write the new key to `FILE` (default: the --admin-key-file)")
	cmd.Flags().StringVar(&name, "name", "admin", "name of the new key")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// rotateAdmin creates the new key with the old one, writes it, and revokes
// the old key with the new one, which proves the new key works before the
// old one stops.
func (e adminEnv) rotateAdmin(ctx context.Context, f *adminFlags, out, name string) (rotation, error) {
	if out == "" {
		out = f.keyFile
	}
	if out == "" {
		return rotation{}, errors.New("--out FILE is required when the key comes from $" + envAdminKey)
	}
	server, err := resolveServer(f.server, e.getenv)
	if err != nil {
		return rotation{}, err
	}
	oldKey, err := resolveKey(f.keyFile, e.getenv)
	if err != nil {
		return rotation{}, err
	}
	oldID, _, err := secret.Parse(secret.APIKeyPrefix, oldKey)
	if err != nil {
		return rotation{}, fmt.Errorf("the admin key in use: %w", err)
	}
	old := client.New(server, oldKey, e.httpClient)
	created, err := old.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: name, Admin: true})
	if err != nil {
		return rotation{}, fmt.Errorf("create the new admin key: %w", err)
	}
	if err := writeKeyFile(out, created.Key); err != nil {
		if _, rerr := old.RevokeAPIKey(ctx, created.ID); rerr != nil {
			return rotation{}, fmt.Errorf("%w; the new key %s could not be revoked either (%v): revoke it by hand", err, created.ID, rerr)
		}
		return rotation{}, fmt.Errorf("%w; the new key was revoked, the old one still works", err)
	}
	revoked, err := client.New(server, created.Key, e.httpClient).RevokeAPIKey(ctx, oldID)
	if err != nil {
		return rotation{}, fmt.Errorf("the new admin key %s is in %s, but revoking the old key %s failed: %w", created.ID, out, oldID, err)
	}
	created.Key = ""
	return rotation{New: created, KeyFile: out, Revoked: revoked}, nil
}

// writeKeyFile replaces path with a file holding key, mode 0600, so a
// reader sees the old key or the new one, never a part.
func writeKeyFile(path, key string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".postern-key-*")
	if err != nil {
		return fmt.Errorf("write the new admin key: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing left to remove
	_, err = tmp.WriteString(key + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write the new admin key to %s: %w", path, err)
	}
	return nil
}
