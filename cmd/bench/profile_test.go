package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/postern/postern/cmd/internal/debugserve"
	"github.com/postern/postern/cmd/internal/testkit"
)

// profileDirEnv names the directory where a run keeps CPU and allocation
// profiles of the relay and the agent under each HTTP load (`make
// profile`), and, in the fleet scenario, the idle relay's and the fleet's
// own around a relay kill. Unset, the binaries serve no profiles.
const profileDirEnv = "POSTERN_BENCH_PROFILES"

// profileSeconds is how long each profile samples: the length of one HTTP
// load (httpDuration).
const profileSeconds = int(httpDuration / time.Second)

// profiler fetches profiles from the binaries' loopback debug listeners
// (debugserve) into dir. A nil profiler does nothing.
type profiler struct {
	dir   string
	addrs map[string]string // process name -> debug listener
}

// newProfiler returns nil unless profileDirEnv is set; it profiles the
// processes named (relay and agent when none are).
func newProfiler(tb testing.TB, names ...string) *profiler {
	dir := os.Getenv(profileDirEnv)
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		tb.Fatalf("%s: %v", profileDirEnv, err)
	}
	if len(names) == 0 {
		names = []string{"relay", "agent"}
	}
	p := &profiler{dir: dir, addrs: map[string]string{}}
	for _, name := range names {
		p.addrs[name] = testkit.FreeAddr(tb)
	}
	return p
}

// env is what process name needs in its environment to serve profiles.
func (p *profiler) env(name string) []string {
	if p == nil {
		return nil
	}
	return []string{debugserve.EnvVar + "=" + p.addrs[name]}
}

// during runs work while a CPU and an allocation profile of each process
// sample it, and keeps them as <process>-<kind>-<scenario>.pprof.
func (p *profiler) during(ctx context.Context, scenario string, work func() error) error {
	if p == nil {
		return nil
	}
	slug := strings.NewReplacer(" (wss://)", "-wss", ", ", "-", " ", "-", "=", "").Replace(strings.ToLower(scenario))
	g, gctx := errgroup.WithContext(ctx)
	for name, addr := range p.addrs {
		for kind, path := range map[string]string{"cpu": "profile", "allocs": "allocs"} {
			url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", addr, path, profileSeconds)
			file := filepath.Join(p.dir, fmt.Sprintf("%s-%s-%s.pprof", name, kind, slug))
			g.Go(func() error { return fetch(gctx, url, file) })
		}
	}
	werr := work()
	return errors.Join(werr, g.Wait())
}

// cpuFor starts a CPU profile of each process over the next d, kept as
// <process>-cpu-<scenario>.pprof; wait returns once they are saved.
func (p *profiler) cpuFor(ctx context.Context, scenario string, d time.Duration) (wait func() error) {
	if p == nil {
		return func() error { return nil }
	}
	var g errgroup.Group
	for name, addr := range p.addrs {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d/time.Second))
		file := filepath.Join(p.dir, fmt.Sprintf("%s-cpu-%s.pprof", name, slugOf(scenario)))
		g.Go(func() error { return fetch(ctx, url, file) })
	}
	return g.Wait
}

// snapshot keeps a heap and a goroutine profile of each process as they
// are now, as <process>-<heap|goroutine>-<scenario>.pprof: what a state
// (such as many idle streams) holds, rather than what a load does.
func (p *profiler) snapshot(ctx context.Context, scenario string) error {
	if p == nil {
		return nil
	}
	var errs []error
	for name, addr := range p.addrs {
		for _, kind := range []string{"heap", "goroutine"} {
			url := fmt.Sprintf("http://%s/debug/pprof/%s?gc=1", addr, kind)
			file := filepath.Join(p.dir, fmt.Sprintf("%s-%s-%s.pprof", name, kind, slugOf(scenario)))
			errs = append(errs, fetch(ctx, url, file))
		}
	}
	return errors.Join(errs...)
}

// fetch saves what url answers in file.
func fetch(ctx context.Context, url, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(profileSeconds+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("profile %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("profile %s: %w", url, err)
	}
	return f.Close()
}

// selfGoroutinesAfter is when self takes its goroutine profile.
const selfGoroutinesAfter = 5 * time.Second

// self profiles this process, which runs the fleet's agents, from now
// until the returned stop: a CPU profile, and a goroutine profile
// selfGoroutinesAfter in, if it is still running then, as
// fleet-<cpu|goroutine>-<scenario>.pprof. A nil profiler does nothing.
func (p *profiler) self(scenario string) (stop func() error) {
	if p == nil {
		return func() error { return nil }
	}
	name := func(kind string) string {
		return filepath.Join(p.dir, fmt.Sprintf("fleet-%s-%s.pprof", kind, slugOf(scenario)))
	}
	f, err := os.Create(name("cpu"))
	if err != nil {
		return func() error { return err }
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return func() error { return err }
	}
	dumped := make(chan error, 1)
	dump := time.AfterFunc(selfGoroutinesAfter, func() {
		g, err := os.Create(name("goroutine"))
		if err == nil {
			err = errors.Join(pprof.Lookup("goroutine").WriteTo(g, 0), g.Close())
		}
		dumped <- err
	})
	return func() error {
		pprof.StopCPUProfile()
		var derr error
		if !dump.Stop() {
			derr = <-dumped // the dump ran, or runs now: wait for it
		}
		return errors.Join(f.Close(), derr)
	}
}

// slugOf is scenario as it goes into the name of a state's profile file.
func slugOf(scenario string) string {
	return strings.NewReplacer(" ", "-", ",", "").Replace(strings.ToLower(scenario))
}
