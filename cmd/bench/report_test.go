package bench

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// row is one line of the result table: samples of the same measure taken
// directly and through the tunnel.
type row struct {
	name           string
	unit           string
	higherIsBetter bool
	direct, tunnel []float64
}

// ratio is median(tunnel) / median(direct).
func (r *row) ratio() float64 {
	d := median(r.direct)
	if d == 0 {
		return 0
	}
	return median(r.tunnel) / d
}

// add keeps one sample, taken through the tunnel or directly.
func (r *row) add(tunnel bool, v float64) {
	if tunnel {
		r.tunnel = append(r.tunnel, v)
	} else {
		r.direct = append(r.direct, v)
	}
}

// report gives the benchmark the row's medians in unit and their ratio.
func (r *row) report(b *testing.B, unit string) {
	b.ReportMetric(median(r.direct), "direct_"+unit)
	b.ReportMetric(median(r.tunnel), "tunnel_"+unit)
	b.ReportMetric(r.ratio(), "ratio")
}

// costRow is the CPU time the relay and the agent spent per unit of
// tunnelled work in one scenario.
type costRow struct {
	name, unit   string
	relay, agent []float64
}

// table collects rows in the order scenarios first report them. base and
// test name the two columns; "direct" and "tunnel" when empty.
type table struct {
	mu         sync.Mutex
	base, test string
	rows       []*row
	costs      []*costRow
	figures    []figure
}

// figure is a measure without a direct counterpart (the scale scenario,
// TLS against plain), with its target when it has one.
type figure struct {
	name, value, target string
	judged, ok          bool // judged: has a target; ok: meets it
}

func (f figure) verdict() string {
	switch {
	case !f.judged:
		return "-"
	case f.ok:
		return "ok"
	default:
		return "MISSED"
	}
}

// addFigure appends f to the figures section.
func (t *table) addFigure(f figure) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.figures = append(t.figures, f)
}

// checkFigures fails the run for every figure that misses its target.
func (t *table) checkFigures(b *testing.B) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.figures {
		if f.judged && !f.ok {
			b.Errorf("%s: %s misses the target %s", f.name, f.value, f.target)
		}
	}
}

// resetCost is reset for the CPU cost section.
func (t *table) resetCost(name, unit string) *costRow {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := findOrAdd(&t.costs, func(c *costRow) bool { return c.name == name },
		func() *costRow { return &costRow{name: name, unit: unit} })
	c.relay, c.agent = c.relay[:0], c.agent[:0]
	return c
}

// reset returns the named row with its samples cleared, creating it on
// first use. A benchmark calls it at the top of each invocation so the
// table keeps only the final invocation's samples: the testing package's
// probe run with b.N = 1 becomes a warm-up.
func (t *table) reset(name, unit string, higherIsBetter bool) *row {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := findOrAdd(&t.rows, func(r *row) bool { return r.name == name },
		func() *row { return &row{name: name, unit: unit, higherIsBetter: higherIsBetter} })
	r.direct, r.tunnel = r.direct[:0], r.tunnel[:0]
	return r
}

// findOrAdd returns the element of *list that match accepts, appending
// the one create makes when there is none.
func findOrAdd[T any](list *[]*T, match func(*T) bool, create func() *T) *T {
	if i := slices.IndexFunc(*list, match); i >= 0 {
		return (*list)[i]
	}
	x := create()
	*list = append(*list, x)
	return x
}

func (t *table) find(name string) (*row, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := slices.IndexFunc(t.rows, func(r *row) bool { return r.name == name })
	if i < 0 {
		return nil, false
	}
	return t.rows[i], true
}

// write prints the table: medians of the samples and their ratio.
func (t *table) write(w io.Writer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	base, test := cmp.Or(t.base, "direct"), cmp.Or(t.test, "tunnel")
	lines := [][]string{{"scenario", base, test, "ratio " + test + "/" + base, "better", "runs"}}
	for _, r := range t.rows {
		better := "higher"
		if !r.higherIsBetter {
			better = "lower"
		}
		lines = append(lines, []string{
			r.name + " (" + r.unit + ")",
			format(median(r.direct)), format(median(r.tunnel)),
			strconv.FormatFloat(r.ratio(), 'f', 3, 64), better,
			strconv.Itoa(min(len(r.direct), len(r.tunnel))),
		})
	}
	if err := writeGrid(w, lines); err != nil {
		return err
	}
	if err := t.writeCosts(w); err != nil {
		return err
	}
	return t.writeFigures(w)
}

// writeFigures prints the figures section, when there is one.
func (t *table) writeFigures(w io.Writer) error {
	if len(t.figures) == 0 {
		return nil
	}
	if _, err := io.WriteString(w, "\nFigures with targets (memory, scale, TLS):\n"); err != nil {
		return err
	}
	lines := [][]string{{"figure", "value", "target", "verdict"}}
	for _, f := range t.figures {
		target := f.target
		if !f.judged {
			target = "-"
		}
		lines = append(lines, []string{f.name, f.value, target, f.verdict()})
	}
	return writeGrid(w, lines)
}

// writeCosts prints the CPU cost section, when there is one.
func (t *table) writeCosts(w io.Writer) error {
	if len(t.costs) == 0 {
		return nil
	}
	if _, err := io.WriteString(w, "\nCPU (user+sys) the tunnel processes spent per unit of work, median:\n"); err != nil {
		return err
	}
	lines := [][]string{{"scenario", "relay", "agent", "relay+agent", "unit"}}
	for _, c := range t.costs {
		lines = append(lines, []string{c.name, format(median(c.relay)), format(median(c.agent)),
			format(median(c.relay) + median(c.agent)), c.unit})
	}
	return writeGrid(w, lines)
}

// writeGrid prints lines as a pipe-separated grid: the first line is the
// header, the first column left-aligned, the others right-aligned.
func writeGrid(w io.Writer, lines [][]string) error {
	widths := make([]int, len(lines[0]))
	for _, l := range lines {
		for i, cell := range l {
			widths[i] = max(widths[i], len(cell))
		}
	}
	var b strings.Builder
	for n, l := range lines {
		for i, cell := range l {
			if i > 0 {
				b.WriteString(" | ")
			}
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", widths[i], cell)
			} else {
				fmt.Fprintf(&b, "%*s", widths[i], cell)
			}
		}
		b.WriteByte('\n')
		if n == 0 {
			for i, wd := range widths {
				if i > 0 {
					b.WriteString("-|-")
				}
				b.WriteString(strings.Repeat("-", wd))
			}
			b.WriteByte('\n')
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func format(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
