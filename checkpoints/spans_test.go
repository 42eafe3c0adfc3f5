package checkpoints

import (
	"bytes"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
)

// patterned writes a checkpoint whose tensor "b" (rows of cols bytes)
// starts at an offset no block size divides, after a small tensor "a",
// and returns b's bytes.
func patterned(t *testing.T, dir string, rows, cols int) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(3))
	b := make([]byte, rows*cols)
	rng.Read(b)
	entries := []Entry{
		{Name: "a", DType: backend.BF16, Shape: []int{3}, Data: func() ([]byte, error) { return []byte{1, 2, 3, 4, 5, 6}, nil }},
		{Name: "b", DType: backend.BF16, Shape: []int{rows, cols / 2}, Data: func() ([]byte, error) { return b, nil }},
	}
	if err := WriteFile(filepath.Join(dir, "model.safetensors"), entries, nil); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSpanReader(t *testing.T) {
	dir := t.TempDir()
	const rows, cols = 700, 3000 // rows of 3000 bytes: never page aligned
	want := patterned(t, dir, rows, cols)
	ts, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	rng := rand.New(rand.NewSource(5))
	for _, direct := range []bool{false, true} {
		rd := NewSpanReader(ts, direct)
		var buf []byte
		for trial := range 40 {
			// Random rows (sometimes all, sometimes runs, sometimes part
			// of a row), random read sizes, gaps and parallelism.
			rd.MergeGap = []int64{0, 1, 4096, 32 << 10}[trial%4]
			rd.MaxRead = []int64{512, 4096, 5000, 1 << 20}[trial/4%4]
			rd.Workers = 1 + trial%5
			keep := []float64{0.05, 0.4, 0.9, 1}[trial/3%4]
			var spans []Span
			for r := range rows {
				if rng.Float64() < keep {
					off, n := int64(r*cols), int64(cols)
					if trial%7 == 6 {
						off += int64(rng.Intn(cols / 2))
						n = int64(rng.Intn(cols / 2))
					}
					spans = append(spans, Span{off, n})
				}
			}
			var pos []int64
			buf, pos, err = rd.Read("b", spans, buf)
			if err != nil {
				t.Fatalf("direct %v trial %d: %v", direct, trial, err)
			}
			for i, s := range spans {
				if got := buf[pos[i] : pos[i]+s.Len]; !bytes.Equal(got, want[s.Off:s.Off+s.Len]) {
					t.Fatalf("direct %v trial %d: span %d (%+v) differs", direct, trial, i, s)
				}
			}
		}
		// The last bytes of the file (a direct read past its end is short).
		got, pos, err := rd.Read("b", []Span{{int64(rows*cols - 10), 10}}, nil)
		if err != nil || !bytes.Equal(got[pos[0]:pos[0]+10], want[rows*cols-10:]) {
			t.Fatalf("direct %v: the file's last bytes: %v", direct, err)
		}
		t.Logf("direct %v: reads bypass the page cache: %v", direct, rd.Direct("b"))
		if !direct && rd.Direct("b") {
			t.Error("a buffered reader reports direct reads")
		}
		if err := rd.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpanReaderErrors(t *testing.T) {
	dir := t.TempDir()
	patterned(t, dir, 4, 10)
	ts, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	rd := NewSpanReader(ts, false)
	defer rd.Close()
	for _, c := range []struct {
		name  string
		spans []Span
		want  string
	}{
		{"c", []Span{{0, 1}}, `no tensor "c"`},
		{"b", []Span{{35, 10}}, "byte range [35, 45) is outside its 40 bytes"},
		{"b", []Span{{20, 10}, {5, 1}}, "out of order"},
		{"b", []Span{{0, 10}, {9, 1}}, "out of order"},
		{"b", []Span{{-1, 1}}, "outside"},
	} {
		if _, _, err := rd.Read(c.name, c.spans, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Read(%s, %v): %v, want an error with %q", c.name, c.spans, err, c.want)
		}
	}
}
