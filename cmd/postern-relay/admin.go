package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

// The admin commands talk to a running relay's HTTP API; they never open
// the store themselves, so they work the same against one node or a
// cluster.

const (
	envServer      = "POSTERN_SERVER"
	envAdminKey    = "POSTERN_ADMIN_KEY"
	defaultServer  = "http://127.0.0.1:8080"
	maxKeyFileSize = 4096
)

var errNoAdminKey = errors.New("no admin key: pass --admin-key-file FILE or set " + envAdminKey)

// adminEnv is what the admin commands take from the process, so tests can
// supply their own environment and HTTP client.
type adminEnv struct {
	getenv     func(string) string
	httpClient *http.Client // nil: the client package's default
}

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	server  string
	keyFile string
}

func newConnectionsCmd() *cobra.Command { return adminEnv{getenv: os.Getenv}.connectionsCmd() }

func newAPIKeysCmd() *cobra.Command { return adminEnv{getenv: os.Getenv}.apiKeysCmd() }

func (e adminEnv) connectionsCmd() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "connections",
		Short: "Create, list, show, revoke connections, rotate their agent tokens and show their status",
		Args:  cobra.NoArgs,
	}
	f.register(cmd)
	cmd.AddCommand(
		e.connCreateCmd(f),
		e.connListCmd(f),
		e.connShowCmd(f),
		e.connRevokeCmd(f),
		e.connRotateCmd(f),
		e.connStatusCmd(f),
		e.connCheckCmd(f),
	)
	return cmd
}

func (e adminEnv) apiKeysCmd() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "api-keys",
		Short: "Create API keys for the relay's API and proxy",
		Args:  cobra.NoArgs,
	}
	f.register(cmd)
	cmd.AddCommand(e.keyCreateCmd(f))
	return cmd
}

func (f *adminFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", "",
		"relay API `URL` (default $"+envServer+", else "+defaultServer+")")
	pf.StringVar(&f.keyFile, "admin-key-file", "",
		"read the API key from `FILE` (default: the key in $"+envAdminKey+")")
}

// client builds an API client from the flags and the environment.
func (e adminEnv) client(f *adminFlags) (*client.Client, error) {
	server, err := resolveServer(f.server, e.getenv)
	if err != nil {
		return nil, err
	}
	key, err := resolveKey(f.keyFile, e.getenv)
	if err != nil {
		return nil, err
	}
	return client.New(server, key, e.httpClient), nil
}

// resolveServer picks --server, then $POSTERN_SERVER, then the default,
// and checks it is an http(s) URL.
func resolveServer(flag string, getenv func(string) string) (string, error) {
	server := flag
	if server == "" {
		server = strings.TrimSpace(getenv(envServer))
	}
	if server == "" {
		server = defaultServer
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("server %q: want an http:// or https:// URL", server)
	}
	return server, nil
}

// resolveKey reads the key from --admin-key-file, else $POSTERN_ADMIN_KEY.
// The key is never a flag value: flags end up in shell history and in ps.
func resolveKey(file string, getenv func(string) string) (string, error) {
	if file == "" {
		key := strings.TrimSpace(getenv(envAdminKey))
		if key == "" {
			return "", errNoAdminKey
		}
		return key, nil
	}
	fh, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("read admin key: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxKeyFileSize+1))
	if err != nil {
		return "", fmt.Errorf("read admin key %s: %w", file, err)
	}
	if len(data) > maxKeyFileSize {
		return "", fmt.Errorf("admin key file %s: larger than %d bytes, not a key", file, maxKeyFileSize)
	}
	key := strings.TrimSpace(string(data))
	if key == "" {
		return "", fmt.Errorf("admin key file %s is empty", file)
	}
	return key, nil
}

func addJSONFlag(cmd *cobra.Command, asJSON *bool) {
	cmd.Flags().BoolVar(asJSON, "json", false, "print the API's JSON answer instead of text")
}

func (e adminEnv) connCreateCmd(f *adminFlags) *cobra.Command {
	var (
		workspace string
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a connection and print its agent token (shown only once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(f)
			if err != nil {
				return err
			}
			conn, err := c.CreateConnection(cmd.Context(), args[0], workspace)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, conn)
			}
			fields := append(connectionFields(conn, false), field{"agent token", conn.AgentToken})
			if err := printFields(w, fields...); err != nil {
				return err
			}
			_, err = fmt.Fprintln(w, "\nThe agent token is shown only once: store it now and put it in the agent's config.")
			return err
		},
	}
	cmd.Flags().StringVar(&workspace, "workspace", "", "workspace of the connection (default: the relay's default workspace)")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func (e adminEnv) connListCmd(f *adminFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List connections",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client(f)
			if err != nil {
				return err
			}
			list, err := c.ListConnections(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, list)
			}
			if len(list.Connections) == 0 {
				_, err := fmt.Fprintln(w, "No connections.")
				return err
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tWORKSPACE\tCREATED\tSTATE")
			for _, conn := range list.Connections {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clean(conn.ID), clean(conn.Name),
					clean(conn.Workspace), formatTime(conn.CreatedAt), state(conn))
			}
			return tw.Flush()
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func (e adminEnv) connShowCmd(f *adminFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one connection",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(f)
			if err != nil {
				return err
			}
			conn, err := c.GetConnection(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), conn)
			}
			return printFields(cmd.OutOrStdout(), connectionFields(conn, true)...)
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func (e adminEnv) connRevokeCmd(f *adminFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a connection: its agents are cut off and cannot reconnect",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(f)
			if err != nil {
				return err
			}
			conn, err := c.RevokeConnection(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), conn)
			}
			return printFields(cmd.OutOrStdout(), connectionFields(conn, true)...)
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func (e adminEnv) connRotateCmd(f *adminFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate-token ID",
		Short: "Issue a new agent token; older tokens keep working for an overlap",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client(f)
			if err != nil {
				return err
			}
			tok, err := c.RotateToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, tok)
			}
			if err := printFields(w,
				field{"agent token", tok.AgentToken},
				field{"previous valid until", formatTime(tok.PreviousValidUntil)},
			); err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "\nThe agent token is shown only once: store it now and update the agents' config.\n"+
				"Tokens issued before it stop working at %s.\n", formatTime(tok.PreviousValidUntil))
			return err
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func (e adminEnv) keyCreateCmd(f *adminFlags) *cobra.Command {
	var (
		workspace string
		admin     bool
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME (--workspace W | --admin)",
		Short: "Create an API key scoped to one workspace, or an admin key (shown only once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			scoped := cmd.Flags().Changed("workspace")
			if scoped == admin {
				return errors.New("exactly one of --workspace W or --admin is required")
			}
			if scoped && strings.TrimSpace(workspace) == "" {
				return errors.New("--workspace must not be empty")
			}
			c, err := e.client(f)
			if err != nil {
				return err
			}
			key, err := c.CreateAPIKey(cmd.Context(), api.CreateAPIKeyRequest{
				Name: args[0], Workspace: workspace, Admin: admin,
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, key)
			}
			fields := []field{{"id", key.ID}, {"name", key.Name}}
			if key.Admin {
				fields = append(fields, field{"scope", "admin (all workspaces)"})
			} else {
				fields = append(fields, field{"workspace", key.Workspace})
			}
			fields = append(fields, field{"created", formatTime(key.CreatedAt)}, field{"key", key.Key})
			if err := printFields(w, fields...); err != nil {
				return err
			}
			_, err = fmt.Fprintln(w, "\nThe key is shown only once: store it now.")
			return err
		},
	}
	cmd.Flags().StringVar(&workspace, "workspace", "", "limit the key to this workspace")
	cmd.Flags().BoolVar(&admin, "admin", false, "make an admin key (every workspace, and may create keys)")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// field is one "key: value" line of human output.
type field struct{ key, value string }

func connectionFields(c api.Connection, withState bool) []field {
	fields := []field{
		{"id", c.ID},
		{"name", c.Name},
		{"workspace", c.Workspace},
		{"created", formatTime(c.CreatedAt)},
	}
	if withState {
		fields = append(fields, field{"state", state(c)})
		if c.RevokedAt != nil {
			fields = append(fields, field{"revoked", formatTime(*c.RevokedAt)})
		}
	}
	return fields
}

// printFields prints aligned "key: value" lines.
func printFields(w io.Writer, fields ...field) error {
	width := 0
	for _, f := range fields {
		width = max(width, len(f.key))
	}
	for _, f := range fields {
		if _, err := fmt.Fprintf(w, "%-*s %s\n", width+1, f.key+":", clean(f.value)); err != nil {
			return err
		}
	}
	return nil
}

// printJSON prints v as one JSON document: the API's answer, re-encoded
// from the same relay/api type the server encoded it from.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func state(c api.Connection) string {
	if c.RevokedAt != nil {
		return "revoked"
	}
	return "active"
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// clean replaces control characters, so a name chosen by whoever called
// the API cannot rewrite the admin's terminal or break the table.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}
