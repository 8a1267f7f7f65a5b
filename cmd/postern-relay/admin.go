package main

import (
	"context"
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

	"github.com/postern/postern/protocol"
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
	caFile  string
}

func newConnectionsCmd() *cobra.Command { return adminEnv{getenv: os.Getenv}.connectionsCmd() }

func newAPIKeysCmd() *cobra.Command { return adminEnv{getenv: os.Getenv}.apiKeysCmd() }

func (e adminEnv) connectionsCmd() *cobra.Command {
	cmd, f := adminGroup("connections",
		"Create, list, show, revoke and delete connections, rotate their agent tokens and show their status and history")
	cmd.AddCommand(
		e.connCreateCmd(f),
		e.connListCmd(f),
		e.connIDCmd(f, "show ID", "Show one connection", (*client.Client).GetConnection),
		e.connIDCmd(f, "revoke ID", "Revoke a connection: its agents are cut off and cannot reconnect",
			(*client.Client).RevokeConnection),
		e.connDeleteCmd(f),
		e.connRotateCmd(f),
		e.connStatusCmd(f),
		e.connCheckCmd(f),
		e.connHistoryCmd(f),
	)
	return cmd
}

func (e adminEnv) apiKeysCmd() *cobra.Command {
	cmd, f := adminGroup("api-keys", "Create, list and revoke API keys for the relay's API and proxy; rotate the admin key")
	cmd.AddCommand(e.keyCreateCmd(f), e.keyListCmd(f), e.keyRevokeCmd(f), e.keyRotateAdminCmd(f))
	return cmd
}

// adminGroup is a command that only holds subcommands; they share the
// admin flags it returns, which may stand before or after their name.
func adminGroup(use, short string) (*cobra.Command, *adminFlags) {
	f := &adminFlags{}
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
	f.register(cmd)
	return cmd, f
}

func (f *adminFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", "",
		"relay API `URL` (default $"+envServer+", else "+defaultServer+")")
	pf.StringVar(&f.keyFile, "admin-key-file", "",
		"read the API key from `FILE` (default: the key in $"+envAdminKey+")")
	pf.StringVar(&f.caFile, "ca-file", "", "also trust the PEM certificates in `FILE` for the relay's TLS (a private CA)")
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
	hc, err := e.httpClientFor(f)
	if err != nil {
		return nil, err
	}
	return client.New(server, key, hc), nil
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

// keyRefused names where the key came from when the relay refused it, so
// that a wrong or stale key reads as that and not as a network problem.
func keyRefused(err error, f *adminFlags) error {
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Reason != protocol.APIAuthRequired {
		return err
	}
	source := "$" + envAdminKey
	if f.keyFile != "" {
		source = "--admin-key-file " + f.keyFile
	}
	return fmt.Errorf("the relay refused the API key from %s (unknown, wrong, revoked or expired): %w", source, err)
}

func addJSONFlag(cmd *cobra.Command, asJSON *bool) {
	cmd.Flags().BoolVar(asJSON, "json", false, "print the API's JSON answer instead of text")
}

// apiCall is a subcommand that makes one call to the relay's API and prints
// the answer: the API's JSON with --json, else text for people. Every admin
// subcommand but events is one, so they all build the client, fail and
// print alike.
type apiCall[T any] struct {
	call func(ctx context.Context, c *client.Client, args []string) (T, error)
	text func(w io.Writer, answer T) error
	// verdict, when set, turns an answer already printed into the
	// command's exit status.
	verdict func(answer T) error
	// warnings, when set, are the answer's warnings: each goes to stderr
	// as "warning: ...", so stdout keeps only the answer (a token, JSON).
	warnings func(answer T) []string
}

// command makes cmd run the call with a client built from f, and gives it
// --json.
func (a apiCall[T]) command(e adminEnv, f *adminFlags, cmd *cobra.Command) *cobra.Command {
	var asJSON bool
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := e.client(f)
		if err != nil {
			return err
		}
		answer, err := a.call(cmd.Context(), c, args)
		if err != nil {
			return keyRefused(err, f)
		}
		a.warn(cmd.ErrOrStderr(), answer)
		if asJSON {
			err = printJSON(cmd.OutOrStdout(), answer)
		} else {
			err = a.text(cmd.OutOrStdout(), answer)
		}
		if err != nil || a.verdict == nil {
			return err
		}
		return a.verdict(answer)
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// warn prints the answer's warnings, one "warning: ..." line each.
func (a apiCall[T]) warn(w io.Writer, answer T) {
	if a.warnings == nil {
		return
	}
	for _, msg := range a.warnings(answer) {
		fmt.Fprintln(w, "warning: "+clean(msg))
	}
}

func (e adminEnv) connCreateCmd(f *adminFlags) *cobra.Command {
	var workspace string
	var tf tokenFile
	cmd := apiCall[api.Connection]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.Connection, error) {
			conn, err := c.CreateConnection(ctx, args[0], workspace)
			if err == nil {
				err = tf.takeFrom(&conn.AgentToken)
			}
			return conn, err
		},
		text: func(w io.Writer, conn api.Connection) error {
			if tf.saved {
				return tf.printSaved(w, connectionFields(conn, false), "")
			}
			fields := append(connectionFields(conn, false), field{"agent token", conn.AgentToken})
			return printWithNotice(w, fields,
				"\nThe agent token is shown only once: store it now and put it in the agent's config.\n")
		},
		warnings: func(conn api.Connection) []string { return conn.Warnings },
	}.command(e, f, &cobra.Command{
		Use:   "create NAME",
		Short: "Create a connection and print its agent token (shown only once)",
		Args:  cobra.ExactArgs(1),
	})
	cmd.Flags().StringVar(&workspace, "workspace", "", "workspace of the connection (default: the relay's default workspace)")
	tf.register(cmd)
	return cmd
}

func (e adminEnv) connListCmd(f *adminFlags) *cobra.Command {
	return apiCall[api.ConnectionList]{
		call: func(ctx context.Context, c *client.Client, _ []string) (api.ConnectionList, error) {
			return c.ListConnections(ctx)
		},
		text: printConnectionList,
	}.command(e, f, &cobra.Command{
		Use:   "list",
		Short: "List connections",
		Args:  cobra.NoArgs,
	})
}

func printConnectionList(w io.Writer, list api.ConnectionList) error {
	rows := make([][]string, len(list.Connections))
	for i, conn := range list.Connections {
		rows[i] = []string{clean(conn.ID), clean(conn.Name), clean(conn.Workspace), formatTime(conn.CreatedAt), state(conn)}
	}
	return printTable(w, "No connections.", "ID\tNAME\tWORKSPACE\tCREATED\tSTATE", rows)
}

// connIDCmd is a subcommand that sends its one argument, a connection id,
// and prints the connection the relay answers with.
func (e adminEnv) connIDCmd(f *adminFlags, use, short string,
	send func(c *client.Client, ctx context.Context, id string) (api.Connection, error)) *cobra.Command {
	return apiCall[api.Connection]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.Connection, error) {
			return send(c, ctx, args[0])
		},
		text: func(w io.Writer, conn api.Connection) error {
			return printFields(w, connectionFields(conn, true)...)
		},
	}.command(e, f, &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(1)})
}

// connDeleteCmd deletes a revoked connection. The API answers without a
// body, so the command reads the connection first: the text names it, and
// --json prints it as it was when it was deleted.
func (e adminEnv) connDeleteCmd(f *adminFlags) *cobra.Command {
	return apiCall[api.Connection]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.Connection, error) {
			conn, err := c.GetConnection(ctx, args[0])
			if err == nil {
				err = c.DeleteConnection(ctx, conn.ID)
			}
			return conn, err
		},
		text: func(w io.Writer, conn api.Connection) error {
			_, err := fmt.Fprintf(w, "Deleted connection %s (%s).\n", clean(conn.ID), clean(conn.Name))
			return err
		},
	}.command(e, f, &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a revoked connection: it and its agent tokens are gone for good (revoke it first)",
		Args:  cobra.ExactArgs(1),
	})
}

func (e adminEnv) connRotateCmd(f *adminFlags) *cobra.Command {
	var req api.RotateTokenRequest
	var tf tokenFile
	cmd := apiCall[api.TokenResponse]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.TokenResponse, error) {
			tok, err := c.RotateToken(ctx, args[0], req)
			if err == nil {
				err = tf.takeFrom(&tok.AgentToken)
			}
			return tok, err
		},
		text: func(w io.Writer, tok api.TokenResponse) error {
			until := formatTime(tok.PreviousValidUntil)
			then := "Tokens issued before it stop working at " + until + ", and the tunnels they opened close then.\n"
			if req.ExpirePrevious {
				then = "Tokens issued before it stopped working now, and the tunnels they opened were closed.\n"
			}
			if tf.saved {
				return tf.printSaved(w, []field{{"previous valid until", until}}, then)
			}
			return printWithNotice(w, []field{{"agent token", tok.AgentToken}, {"previous valid until", until}},
				"\nThe agent token is shown only once: store it now and update the agents' config.\n"+then)
		},
	}.command(e, f, &cobra.Command{
		Use:   "rotate-token ID [--expire-previous]",
		Short: "Issue a new agent token; older tokens keep working for an overlap, or end now",
		Args:  cobra.ExactArgs(1),
	})
	cmd.Flags().BoolVar(&req.ExpirePrevious, "expire-previous", false,
		"end the older tokens now and close the tunnels they opened (a leaked token), instead of after the overlap")
	tf.register(cmd)
	return cmd
}

func (e adminEnv) keyCreateCmd(f *adminFlags) *cobra.Command {
	var (
		workspace string
		admin     bool
		expiresIn lifetime
	)
	cmd := apiCall[api.APIKey]{
		call: func(ctx context.Context, c *client.Client, args []string) (api.APIKey, error) {
			return c.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: args[0], Workspace: workspace, Admin: admin,
				ExpiresAt: expiresIn.from(time.Now())})
		},
		text: printAPIKey,
	}.command(e, f, &cobra.Command{
		Use:   "create NAME (--workspace W | --admin) [--expires-in DUR]",
		Short: "Create an API key scoped to one workspace, or an admin key (shown only once)",
		Args:  cobra.ExactArgs(1),
	})
	// Before RunE, so a bad scope is refused before the key or the server
	// is looked at.
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		scoped := cmd.Flags().Changed("workspace")
		if scoped == admin {
			return errors.New("exactly one of --workspace W or --admin is required")
		}
		if scoped && strings.TrimSpace(workspace) == "" {
			return errors.New("--workspace must not be empty")
		}
		return nil
	}
	cmd.Flags().StringVar(&workspace, "workspace", "", "limit the key to this workspace")
	cmd.Flags().BoolVar(&admin, "admin", false, "make an admin key (every workspace, and may create keys)")
	cmd.Flags().Var(&expiresIn, "expires-in", "the key stops working after `DUR` (90d, 12h, 30m; default: never)")
	return cmd
}

func printAPIKey(w io.Writer, key api.APIKey) error {
	fields := []field{{"id", key.ID}, {"name", key.Name}}
	if key.Admin {
		fields = append(fields, field{"scope", "admin (all workspaces)"})
	} else {
		fields = append(fields, field{"workspace", key.Workspace})
	}
	fields = append(fields, field{"created", formatTime(key.CreatedAt)})
	if key.ExpiresAt != nil {
		fields = append(fields, field{"expires", formatTime(*key.ExpiresAt)})
	}
	fields = append(fields, field{"key", key.Key})
	return printWithNotice(w, fields, "\nThe key is shown only once: store it now.\n")
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

// printTable prints header and rows, their cells separated by tabs, as
// columns two spaces apart; with no rows it prints only empty, when that
// is not "".
func printTable(w io.Writer, empty, header string, rows [][]string) error {
	if len(rows) == 0 && empty != "" {
		_, err := fmt.Fprintln(w, empty)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, cells := range rows {
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// printWithNotice prints fields, then a notice about them (a secret shown
// only this once).
func printWithNotice(w io.Writer, fields []field, notice string) error {
	if err := printFields(w, fields...); err != nil {
		return err
	}
	_, err := io.WriteString(w, notice)
	return err
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
