package protocol

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests in this file keep spec.md and the code in step: the tables in
// the spec are parsed and compared with the constants and the reason table
// of this package. See spec.md, section 14.

// readSpec returns the text of spec.md.
func readSpec(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("spec.md")
	require.NoError(t, err)
	return string(raw)
}

// specTable returns the rows of the one markdown table in spec whose header
// row starts with the cell firstColumn, each row keyed by column header.
func specTable(t *testing.T, spec, firstColumn string) []map[string]string {
	t.Helper()
	lines := strings.Split(spec, "\n")
	start := -1
	for i, line := range lines {
		cells := tableCells(line)
		if len(cells) > 0 && cells[0] == firstColumn {
			require.Equal(t, -1, start, "spec.md has two tables starting with column %q", firstColumn)
			start = i
		}
	}
	require.NotEqual(t, -1, start, "spec.md has no table starting with column %q", firstColumn)
	header := tableCells(lines[start])
	require.Less(t, start+1, len(lines))
	require.True(t, strings.HasPrefix(strings.TrimSpace(lines[start+1]), "|---"),
		"table %q: header not followed by a separator row", firstColumn)

	var rows []map[string]string
	for _, line := range lines[start+2:] {
		cells := tableCells(line)
		if cells == nil {
			break
		}
		require.Len(t, cells, len(header), "table %q: row %q", firstColumn, line)
		row := make(map[string]string, len(header))
		for i, h := range header {
			row[h] = cells[i]
		}
		rows = append(rows, row)
	}
	require.NotEmpty(t, rows, "table %q has no rows", firstColumn)
	return rows
}

// tableCells splits a markdown table row into trimmed cells, or returns nil
// when line is not a table row.
func tableCells(line string) []string {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") || len(line) < 2 {
		return nil
	}
	parts := strings.Split(line[1:len(line)-1], "|")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// codeCell returns the text of a cell written as `code`, or "" for a cell
// that says "none" with a dash. Anything else is a malformed cell.
func codeCell(t *testing.T, cell string) string {
	t.Helper()
	if cell == "—" || cell == "-" || cell == "" {
		return ""
	}
	require.True(t, len(cell) >= 2 && strings.HasPrefix(cell, "`") && strings.HasSuffix(cell, "`"),
		"cell %q: want `code` or —", cell)
	return cell[1 : len(cell)-1]
}

// Scopes a reason can have in the reason table (spec.md, section 8).
var reasonScopes = []string{"connect", "result", "check", "status", "tunnel", "api"}

func TestSpecReasonTable(t *testing.T) {
	rows := map[Reason]map[string]string{}
	for _, row := range specTable(t, readSpec(t), "Reason") {
		r := Reason(codeCell(t, row["Reason"]))
		require.NotContains(t, rows, r, "reason %s has two rows", r)
		rows[r] = row
	}

	for _, info := range Reasons() {
		t.Run(string(info.Reason), func(t *testing.T) {
			row, ok := rows[info.Reason]
			require.True(t, ok, "spec.md reason table has no row for %s", info.Reason)
			assert.Equal(t, info.ProviderErrorCode, codeCell(t, row["provider_error_code"]), "provider_error_code")

			status := 0
			if s := codeCell(t, row["HTTP"]); s != "" {
				var err error
				status, err = strconv.Atoi(s)
				require.NoError(t, err, "HTTP cell %q", row["HTTP"])
			}
			assert.Equal(t, info.HTTPStatus, status, "HTTP status")

			require.Contains(t, []string{"yes", "no"}, row["Retry-After"])
			assert.Equal(t, info.RetryAfter, row["Retry-After"] == "yes", "Retry-After")

			scopes := strings.Split(row["Scope"], ",")
			for i, s := range scopes {
				scopes[i] = strings.TrimSpace(s)
				assert.Contains(t, reasonScopes, scopes[i], "scope")
			}
			if info.HTTPStatus == 0 {
				assert.NotContains(t, scopes, "connect", "a reason without an HTTP status cannot answer a CONNECT")
			}
			assert.NotEmpty(t, row["Meaning"], "meaning")
		})
	}

	for r := range rows {
		assert.True(t, r.Known(), "spec.md lists %q, which reason.go does not know", r)
	}
}

// frameTypeConstants returns the FrameType constants declared in frame.go
// with their values, read from the source so that a new constant cannot be
// forgotten in the spec.
func frameTypeConstants(t *testing.T) map[string]uint8 {
	t.Helper()
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "frame.go", nil, 0)
	require.NoError(t, err)
	out := map[string]uint8{}
	for _, decl := range file.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			typ, ok := vs.Type.(*ast.Ident)
			if !ok || typ.Name != "FrameType" {
				continue
			}
			require.Len(t, vs.Values, len(vs.Names), "FrameType constants need explicit values")
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				require.True(t, ok && lit.Kind == token.INT, "%s: wire numbers must be integer literals", name.Name)
				n, err := strconv.ParseUint(lit.Value, 0, 8)
				require.NoError(t, err, name.Name)
				out[name.Name] = uint8(n)
			}
		}
	}
	require.NotEmpty(t, out, "no FrameType constants found in frame.go")
	return out
}

func TestSpecFrameTypeTable(t *testing.T) {
	rows := map[uint8]map[string]string{}
	for _, row := range specTable(t, readSpec(t), "Number") {
		n, err := strconv.ParseUint(codeCell(t, row["Number"]), 10, 8)
		require.NoError(t, err, "frame number %q", row["Number"])
		require.NotContains(t, rows, uint8(n), "frame type %d has two rows", n)
		rows[uint8(n)] = row
	}

	consts := frameTypeConstants(t)
	for name, n := range consts {
		t.Run(name, func(t *testing.T) {
			row, ok := rows[n]
			require.True(t, ok, "spec.md frame type table has no row for %d (%s)", n, name)
			assert.Equal(t, name, codeCell(t, row["Constant"]), "constant name of frame type %d", n)
			want := FrameType(n).String()
			if strings.HasPrefix(want, "frame(") {
				want = "" // no wire name, e.g. FrameInvalid
			}
			assert.Equal(t, want, codeCell(t, row["Name"]), "name of frame type %d", n)
		})
	}

	numbers := map[uint8]bool{}
	for _, n := range consts {
		numbers[n] = true
	}
	for n := range rows {
		assert.True(t, numbers[n], "spec.md lists frame type %d, which frame.go does not declare", n)
	}
	// A type with a wire name must be declared (and so be in the table).
	for n := range 256 {
		if !strings.HasPrefix(FrameType(n).String(), "frame(") {
			assert.True(t, numbers[uint8(n)], "FrameType(%d) has a name but no constant", n)
		}
	}
}

func TestSpecGoldenVectorTable(t *testing.T) {
	rows := map[string]string{}
	for _, row := range specTable(t, readSpec(t), "File") {
		rows[codeCell(t, row["File"])] = codeCell(t, row["Frame"])
	}

	files, err := filepath.Glob(filepath.Join("testdata", "*.hex"))
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	for name, g := range goldenFrames() {
		file := name + ".hex"
		assert.Contains(t, names, file, "golden vector %s has no file; run go test ./protocol -update", name)
		assert.Equal(t, g.typ.String(), rows[file], "spec.md golden table row for %s", file)
	}
	for _, file := range names {
		assert.Contains(t, rows, file, "spec.md golden table does not list %s", file)
	}
	for file := range rows {
		assert.True(t, slices.Contains(names, file), "spec.md lists %s, which is not in testdata/", file)
	}
}
