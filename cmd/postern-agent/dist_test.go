package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// distPlatforms reads DIST_PLATFORMS from the Makefile, so this test builds
// exactly what `make dist` ships.
func distPlatforms(t *testing.T) []string {
	t.Helper()
	mk, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^DIST_PLATFORMS\s*:=\s*(.+)$`).FindSubmatch(mk)
	require.NotNil(t, m, "the Makefile defines DIST_PLATFORMS")
	return strings.Fields(string(m[1]))
}

// TestDistCrossCompiles builds both programs for every `make dist`
// platform, statically and stamped like `make dist` does, and checks the
// stamp and the static linking where this machine can.
func TestDistCrossCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiling every `make dist` target takes a while; skipped with -short")
	}
	platforms := distPlatforms(t)
	for _, want := range []string{"linux/amd64", "linux/arm64", "windows/amd64", "darwin/arm64"} {
		assert.Contains(t, platforms, want, "make dist must ship %s", want)
	}
	const stamp = "-X main.version=v9.8.7-disttest -X main.commit=0badc0de -X main.date=2030-01-02T03:04:05Z"
	out := t.TempDir()
	for _, platform := range platforms {
		goos, goarch, ok := strings.Cut(platform, "/")
		require.True(t, ok, "platform %q is not OS/ARCH", platform)
		t.Run(goos+"/"+goarch, func(t *testing.T) {
			t.Parallel()
			// One go build for both programs, so their shared packages are
			// compiled once per platform.
			dir := filepath.Join(out, goos+"-"+goarch) + string(filepath.Separator)
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w "+stamp, "-o", dir, "./cmd/postern-agent", "./cmd/postern-relay")
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
			b, err := cmd.CombinedOutput()
			require.NoError(t, err, "go build for %s:\n%s", platform, b)

			for _, prog := range []string{"postern-agent", "postern-relay"} {
				bin := filepath.Join(dir, prog)
				if goos == "windows" {
					bin += ".exe"
				}
				require.FileExists(t, bin)
				if goos == "linux" {
					f, err := elf.Open(bin)
					require.NoError(t, err)
					for _, p := range f.Progs {
						assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s must be static (no dynamic loader)", bin)
					}
					f.Close()
				}
				if goos == runtime.GOOS && goarch == runtime.GOARCH {
					v, err := exec.Command(bin, "version").Output()
					require.NoError(t, err)
					assert.Equal(t, prog+" v9.8.7-disttest (commit 0badc0de, built 2030-01-02T03:04:05Z)\n", string(v))
				}
			}
		})
	}
}
