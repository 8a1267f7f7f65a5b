package testkit

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parseCase is one input of a parser's table: the value it must yield,
// or that it must be refused.
type parseCase[T any] struct {
	in      string
	want    T
	wantErr bool
}

// checkParses runs parse on every case of a table.
func checkParses[T any](t *testing.T, parse func(string) (T, error), tests map[string]parseCase[T]) {
	t.Helper()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parse(tc.in)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseVmHWM(t *testing.T) {
	checkParses(t, parseVmHWM, map[string]parseCase[int64]{
		"typical":       {in: "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n", want: 1234 << 10},
		"last line":     {in: "VmHWM: 1 kB", want: 1 << 10},
		"missing":       {in: "Name:\tx\nVmRSS:\t1000 kB\n", wantErr: true},
		"wrong unit":    {in: "VmHWM:\t1234 MB\n", wantErr: true},
		"not a number":  {in: "VmHWM:\tlots kB\n", wantErr: true},
		"no value":      {in: "VmHWM:\n", wantErr: true},
		"empty":         {in: "", wantErr: true},
		"prefix only":   {in: "XVmHWM:\t5 kB\n", wantErr: true},
		"value too big": {in: "VmHWM:\t99999999999999999999 kB\n", wantErr: true},
	})
}

func FuzzParseVmHWM(f *testing.F) {
	for _, s := range []string{"VmHWM:\t1234 kB\n", "VmHWM: kB", "VmHWM:\t-1 kB\n", "", "VmHWM:\t1 kB\nVmHWM:\t2 kB\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := parseVmHWM(s); err == nil && !bytes.Contains([]byte(s), []byte("VmHWM:")) {
			t.Fatalf("parsed a status with no VmHWM line: %q", s)
		}
	})
}

func TestParseUsage(t *testing.T) {
	checkParses(t, parseUsage, map[string]parseCase[Usage]{
		"typical": {
			in:   "Name:\tpostern-relay\nVmHWM:\t   61440 kB\nVmRSS:\t   40960 kB\nThreads:\t12\n",
			want: Usage{RSSKiB: 40960, HWMKiB: 61440, Threads: 12},
		},
		"zombie, no memory lines": {in: "Name:\tx\nState:\tZ (zombie)\nThreads:\t1\n", wantErr: true},
		"no threads":              {in: "VmHWM:\t1 kB\nVmRSS:\t1 kB\n", wantErr: true},
		"threads not a number":    {in: "VmHWM:\t1 kB\nVmRSS:\t1 kB\nThreads:\tmany\n", wantErr: true},
		"rss in pages":            {in: "VmHWM:\t1 kB\nVmRSS:\t1 pages\nThreads:\t1\n", wantErr: true},
		"empty":                   {in: "", wantErr: true},
	})
}

func FuzzParseUsage(f *testing.F) {
	f.Add("VmHWM:\t2 kB\nVmRSS:\t1 kB\nThreads:\t1\n")
	f.Add("VmRSS:\t1 kB\n")
	f.Add("Threads:\t-1\nVmRSS: 1 kB\nVmHWM: 1 kB")
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := parseUsage(s); err == nil && !bytes.Contains([]byte(s), []byte("VmRSS:")) {
			t.Fatalf("parsed a status with no VmRSS line: %q", s)
		}
	})
}

func TestParseCPUTime(t *testing.T) {
	tail := " 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	checkParses(t, parseCPUTime, map[string]parseCase[time.Duration]{
		"typical": {
			in:   "4242 (postern-relay) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 9 0" + tail,
			want: 175 * clockTick,
		},
		"name with spaces and parens": {
			in:   "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0" + tail,
			want: 7 * clockTick,
		},
		"no name":     {in: "7 R 1 7 7 0 -1 0 0 0 0 0 3 4", wantErr: true},
		"short":       {in: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 3", wantErr: true},
		"not numeric": {in: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 three 4 0", wantErr: true},
		"negative":    {in: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 -3 4 0", wantErr: true},
		"empty":       {in: "", wantErr: true},
	})
}

func FuzzParseCPUTime(f *testing.F) {
	f.Add("1 (x) S 1 1 1 0 -1 0 0 0 0 0 150 25 0 0")
	f.Add("1 (a) b) S")
	f.Add(")")
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseCPUTime(s); err == nil && d < 0 {
			t.Fatalf("negative cpu time %v from %q", d, s)
		}
	})
}
