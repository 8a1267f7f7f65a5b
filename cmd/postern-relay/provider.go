package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/provider"
	"github.com/postern/postern/relay/client"
)

// maxCredentialFile bounds a --credential-file; a credential is far
// smaller.
const maxCredentialFile = provider.MaxCredential + 1024

// providerEnv is what `provider check` takes from the process; tune lets
// tests point the checker's resolver and dialer at fakes.
type providerEnv struct {
	admin adminEnv
	tune  func(*provider.Config)
}

func newProviderCmd() *cobra.Command { return providerEnv{admin: adminEnv{getenv: os.Getenv}}.cmd() }

func (e providerEnv) cmd() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "provider",
		Short: "Check a provider connection the way the product does",
		Args:  cobra.NoArgs,
	}
	f.register(cmd)
	cmd.AddCommand(e.checkCmd(f))
	return cmd
}

// providerCheckFlags are the flags of `provider check`, as the contract
// names them.
type providerCheckFlags struct {
	key, mode, baseURL, connection, proxy string
	credFile, credEnv, scopes, caFile     string
	asJSON                                bool
}

func (e providerEnv) checkCmd(af *adminFlags) *cobra.Command {
	f := &providerCheckFlags{}
	cmd := &cobra.Command{
		Use: "check --provider KEY --deployment-mode cloud|self-hosted --base-url URL [--connection ID --proxy HOST:PORT]\n" +
			"      [--credential-file FILE | --credential-env VAR] [--required-scopes a,b] [--ca-file FILE] [--json]",
		Short: "Run the provider checks (base URL, Postern path, identity, scopes, permission); exit 1 unless ready",
		Long: "Runs the checks of the product's \"Provider connection errors\" page in its order and prints one state\n" +
			"with its provider_error_code. The credential comes from a file or an environment variable, never a flag.\n" +
			"Self-hosted providers are reached through the relay's CONNECT proxy (--proxy) for --connection, with the\n" +
			"API key of --admin-key-file or $" + envAdminKey + " (a workspace key is enough).\n" +
			"Providers: " + strings.Join(provider.Keys(), ", ") + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return e.runCheck(cmd, af, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.key, "provider", "", "provider `KEY`: "+strings.Join(provider.Keys(), ", "))
	fl.StringVar(&f.mode, "deployment-mode", "", "cloud or self-hosted")
	fl.StringVar(&f.baseURL, "base-url", "", "the provider's base `URL` as the product saved it")
	fl.StringVar(&f.connection, "connection", "", "the Postern connection `ID` of a self-hosted provider")
	fl.StringVar(&f.proxy, "proxy", "", "the relay's CONNECT proxy, `HOST:PORT` (https://HOST:PORT for TLS to it)")
	fl.StringVar(&f.credFile, "credential-file", "", "read the provider credential from `FILE`")
	fl.StringVar(&f.credEnv, "credential-env", "", "read the provider credential from environment variable `VAR`")
	fl.StringVar(&f.scopes, "required-scopes", "", "scopes the workflow needs, comma-separated, in the provider's names")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM `FILE` of extra roots trusted for the provider, the proxy and the relay's API")
	fl.BoolVar(&f.asJSON, "json", false, "print the state object as JSON")
	for _, name := range []string{"provider", "deployment-mode", "base-url"} {
		_ = cmd.MarkFlagRequired(name)
	}
	cmd.MarkFlagsMutuallyExclusive("credential-file", "credential-env")
	return cmd
}

func (e providerEnv) runCheck(cmd *cobra.Command, af *adminFlags, f *providerCheckFlags) error {
	req, err := e.request(f)
	if err != nil {
		return err
	}
	cfg, err := e.checkerConfig(af, f, req.Mode)
	if err != nil {
		return err
	}
	checker, err := provider.New(cfg)
	if err != nil {
		return err
	}
	st, err := checker.Check(cmd.Context(), req)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if f.asJSON {
		err = printJSON(w, st)
	} else {
		err = printProviderState(w, st)
	}
	if err != nil {
		return err
	}
	if !st.Ready {
		return fmt.Errorf("%w: %s", errNotReady, st.ProviderErrorCode)
	}
	return nil
}

// request builds the check's request from the flags; the credential is
// read from a file or the environment only.
func (e providerEnv) request(f *providerCheckFlags) (provider.Request, error) {
	cred, err := e.credential(f)
	if err != nil {
		return provider.Request{}, err
	}
	var scopes []string
	for s := range strings.SplitSeq(f.scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			scopes = append(scopes, s)
		}
	}
	req := provider.Request{
		Provider: f.key, Mode: provider.Mode(f.mode), BaseURL: f.baseURL, Credential: cred,
		RequiredScopes: scopes, Connection: f.connection,
	}
	if req.Mode == provider.ModeSelfHosted && f.proxy == "" {
		return req, errors.New("a self-hosted check needs --connection ID and --proxy HOST:PORT")
	}
	return req, req.Validate()
}

func (e providerEnv) credential(f *providerCheckFlags) (provider.Credential, error) {
	switch {
	case f.credEnv != "":
		v := e.admin.getenv(f.credEnv)
		if strings.TrimSpace(v) == "" {
			return provider.Credential{}, fmt.Errorf("credential: environment variable %s is empty or unset", clean(f.credEnv))
		}
		return provider.NewCredential(v), nil
	case f.credFile != "":
		data, err := readBounded(f.credFile, maxCredentialFile)
		if err != nil {
			return provider.Credential{}, fmt.Errorf("credential: %w", err)
		}
		return provider.NewCredential(string(data)), nil
	}
	return provider.Credential{}, errors.New("no credential: pass --credential-file FILE or --credential-env VAR")
}

// checkerConfig wires the checker: the extra roots, and for self-hosted
// the relay's proxy and API with the admin key.
func (e providerEnv) checkerConfig(af *adminFlags, f *providerCheckFlags, mode provider.Mode) (provider.Config, error) {
	var cfg provider.Config
	if f.caFile != "" {
		pool, err := rootsWith(f.caFile)
		if err != nil {
			return cfg, err
		}
		cfg.RootCAs = pool
	}
	if mode == provider.ModeSelfHosted {
		// The check's --ca-file shadows the admin commands' one: it
		// covers the relay's API too.
		af.caFile = f.caFile
		api, err := e.admin.client(af)
		if err != nil {
			return cfg, err
		}
		key, _ := resolveKey(af.keyFile, e.admin.getenv) // client has checked it
		proxy := f.proxy
		relay := &client.DialerConfig{Proxy: proxy, APIKey: key, HandshakeTimeout: 20 * time.Second}
		if rest, ok := strings.CutPrefix(proxy, "https://"); ok {
			relay.Proxy = strings.TrimSuffix(rest, "/")
			relay.TLS = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
		}
		cfg.Relay, cfg.API = relay, api
	}
	if e.tune != nil {
		e.tune(&cfg)
	}
	return cfg, nil
}

// rootsWith is the system roots plus the PEM certificates in file.
func rootsWith(file string) (*x509.CertPool, error) {
	pem, err := readBounded(file, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("ca file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate in it", file)
	}
	return pool, nil
}

func readBounded(file string, limit int64) ([]byte, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, limit)
	}
	return data, nil
}

// printProviderState prints one line per step, then the verdict:
//
//	PASS base_url GitLab self-hosted at gitlab.corp:443; ...
//	FAIL identity the credential was revoked (HTTP 401): ...
//	ready: no (PROVIDER_TOKEN_REVOKED, auth revoked)
//	the credential was revoked ...: the saved credential cannot be used any more: create a new one
func printProviderState(w io.Writer, st provider.State) error {
	var b strings.Builder
	for _, s := range st.Steps {
		mark := "PASS"
		if !s.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s %s %s\n", mark, s.Name, clean(s.Detail))
	}
	if st.Ready {
		b.WriteString("ready: yes\n")
	} else {
		why := []string{st.ProviderErrorCode, "auth " + st.AuthStatus.String()}
		if st.RetryAfter > 0 {
			why = append(why, "retry after "+strconv.Itoa(st.RetryAfter)+"s")
		}
		if len(st.MissingScopes) > 0 {
			why = append(why, "missing "+strings.Join(st.MissingScopes, " "))
		}
		fmt.Fprintf(&b, "ready: no (%s)\n%s\n", clean(strings.Join(why, ", ")), clean(st.Message))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
