package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/export"
)

// TestExportDefaultDType: without --dtype, export keeps the weights' own
// dtype (a float32 model stays float32; a bf16 one bf16).
func TestExportDefaultDType(t *testing.T) {
	for _, c := range []struct {
		src  string
		want backend.DType
	}{{"llama-tiny", backend.F32}, {"llama-tiny-bf16", backend.BF16}} {
		out := filepath.Join(t.TempDir(), "hf")
		r := mustRun(t, "export", "--model", filepath.Join(fixtures, c.src), "--format", "hf", "--out", out)
		if dt, err := export.SourceDType(out); err != nil || dt != c.want {
			t.Errorf("%s: exported as %v (%v), want %v", c.src, dt, err, c.want)
		}
		if !strings.Contains(r.stdout, "("+strings.ToLower(c.want.String())+",") {
			t.Errorf("%s: output %q does not name the dtype", c.src, r.stdout)
		}
	}
}
