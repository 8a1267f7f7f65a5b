package audit

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readEntries(t *testing.T, path string) []Entry {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Entry
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), "line %q", sc.Text())
		out = append(out, e)
	}
	return out
}

func TestEntriesAreJSONLinesWithEveryField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit", "audit.jsonl")
	l, err := Open(path, 0, 0)
	require.NoError(t, err)
	e := Entry{Time: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC), RequestID: "r1", Op: "dial", Target: "gitlab.corp:443",
		Addr: "10.0.0.7:443", Decision: Allowed, Rule: "allow host=gitlab.corp ports=443", BytesUp: 10, BytesDown: 20, DurationMS: 5}
	require.NoError(t, l.Write(e))
	require.NoError(t, l.Write(Entry{RequestID: "r2", Target: "10.1.2.3:22", Decision: Denied, Reason: "ALLOWLIST_MISSING"}))
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "Close is idempotent")
	got := readEntries(t, path)
	require.Len(t, got, 2)
	assert.Equal(t, e, got[0])
	assert.Equal(t, "ALLOWLIST_MISSING", got[1].Reason)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Zero(t, fi.Mode().Perm()&0o007, "not world-readable")
}

func TestRotationCapsSizeAndKeepsNewest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, 1000, 2)
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, l.Write(Entry{RequestID: strings.Repeat("x", 50), Op: "dial", DurationMS: int64(i)}))
	}
	require.NoError(t, l.Close())
	for _, p := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.LessOrEqual(t, fi.Size(), int64(1000), p)
	}
	_, err = os.Stat(path + ".3")
	assert.ErrorIs(t, err, os.ErrNotExist, "only keep=2 old files")
	cur := readEntries(t, path)
	assert.Equal(t, int64(99), cur[len(cur)-1].DurationMS, "the newest entry is in the live file")
	older := readEntries(t, path+".1")
	assert.Less(t, older[len(older)-1].DurationMS, cur[0].DurationMS)
}

func TestConcurrentWritersNeverInterleaveLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, 0, 0)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				assert.NoError(t, l.Write(Entry{RequestID: strings.Repeat("y", 200), DurationMS: int64(g*1000 + i)}))
			}
		}()
	}
	wg.Wait()
	require.NoError(t, l.Close())
	assert.Len(t, readEntries(t, path), 1600)
}

func TestWriteAfterCloseFails(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "a.jsonl"), 0, 0)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	assert.Error(t, l.Write(Entry{}))
}

func TestGatheredEntriesReachTheFileWithoutClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	l, err := Open(path, 0, 0)
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.Write(Entry{RequestID: "r1", Decision: Allowed}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := readEntries(t, path); len(got) == 1 {
			assert.Equal(t, "r1", got[0].RequestID)
			return
		}
		require.True(t, time.Now().Before(deadline), "the entry never reached the file while the log stayed open")
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFlushBytesOfEntriesAreWrittenAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	l, err := Open(path, 0, 0)
	require.NoError(t, err)
	defer l.Close()
	e := Entry{RequestID: strings.Repeat("z", 1000)}
	line, err := json.Marshal(e)
	require.NoError(t, err)
	n := 0
	for size := 0; size < FlushBytes; size += len(line) + 1 {
		require.NoError(t, l.Write(e))
		n++
	}
	assert.Equal(t, n, len(readEntries(t, path)), "a full batch does not wait for the timer")
}
