package prune

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
)

// Report records what a prune kept, written as prune-report.json.
type Report struct {
	Source       string            `json:"source"`
	Scores       string            `json:"scores"`
	ScoresMeta   map[string]string `json:"scores_meta,omitempty"`
	ShapeBefore  Shape             `json:"shape_before"`
	ShapeAfter   Shape             `json:"shape_after"`
	ParamsBefore int64             `json:"params_before"`
	ParamsAfter  int64             `json:"params_after"`
	Kept         Kept              `json:"kept"`
}

// Shape is the part of a config pruning changes.
type Shape struct {
	Layers, Hidden, Heads, KVHeads, HeadDim, FFN, Vocab int
}

// Kept lists the kept indices.
type Kept struct {
	Layers []int   `json:"layers"`
	Hidden []int   `json:"hidden"`
	Heads  [][]int `json:"heads"`
	FFN    [][]int `json:"ffn"`
}

func shapeOf(c *model.Config) Shape {
	return Shape{c.NumLayers, c.HiddenSize, c.NumHeads, c.NumKVHeads, c.HeadDim, c.IntermediateSize, c.VocabSize}
}

// ReportFile is the name of the report in a pruned directory.
const ReportFile = "prune-report.json"

// ApplyOptions control Apply.
type ApplyOptions struct {
	Out        string
	MaxShard   int64 // bytes per safetensors shard, default 5 GB
	ScoresPath string
	ScoresMeta map[string]string
	// Progress receives output bytes written out of the total.
	Progress func(done, total int64)
}

// tokenizerFiles are copied from the source directory when present.
var tokenizerFiles = []string{"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}

// Apply writes the pruned model of plan p, read from srcDir, to opt.Out as
// a Hugging Face directory. The directory appears only when complete.
func Apply(ctx context.Context, p *Plan, srcDir string, opt ApplyOptions) (*Report, error) {
	if opt.MaxShard <= 0 {
		opt.MaxShard = 5 << 30
	}
	if st, err := os.Stat(opt.Out); err == nil {
		if entries, _ := os.ReadDir(opt.Out); st.IsDir() && len(entries) > 0 || !st.IsDir() {
			return nil, fmt.Errorf("prune: %s already exists; remove it or choose another --out", opt.Out)
		}
	}
	ts, err := checkpoints.Open(srcDir)
	if err != nil {
		return nil, err
	}
	defer ts.Close()
	srcParams := map[string]model.Param{}
	for _, q := range p.Source.Params() {
		srcParams[q.Name] = q
	}
	var entries []checkpoints.Entry
	var total, done int64
	for _, tp := range p.Target.Params() {
		name := tp.Name
		if tp.Layer >= 0 {
			name = strings.Replace(tp.Name, fmt.Sprintf("model.layers.%d.", tp.Layer), fmt.Sprintf("model.layers.%d.", p.Layers[tp.Layer]), 1)
		}
		sp, ok := srcParams[name]
		if !ok {
			return nil, fmt.Errorf("prune: no source parameter %s for %s", name, tp.Name)
		}
		info, ok := ts.Info(name)
		if !ok {
			return nil, fmt.Errorf("prune: %s: missing tensor %q", srcDir, name)
		}
		if fmt.Sprint(info.Shape) != fmt.Sprint(sp.Shape) {
			return nil, fmt.Errorf("prune: %s: tensor %q has shape %v, the config implies %v", info.File, name, info.Shape, sp.Shape)
		}
		sel := make([][]int, len(sp.Axes))
		for i, ax := range sp.Axes {
			sel[i] = p.selection(ax, tp.Layer)
		}
		e := sliceEntry(ts, tp, info, sel, func(n int64) {
			done += n
			if opt.Progress != nil {
				opt.Progress(done, total)
			}
		}, ctx)
		total += e.Size()
		entries = append(entries, e)
	}
	rep := &Report{Source: srcDir, Scores: opt.ScoresPath, ScoresMeta: opt.ScoresMeta, ShapeBefore: shapeOf(p.Source), ShapeAfter: shapeOf(p.Target),
		ParamsBefore: p.ParamsBefore, ParamsAfter: p.ParamsAfter, Kept: Kept{Layers: p.Layers, Hidden: p.Hidden, Heads: p.Heads, FFN: p.FFN}}
	parent := filepath.Dir(filepath.Clean(opt.Out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(opt.Out)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	fail := func(err error) (*Report, error) {
		os.RemoveAll(tmp)
		return nil, err
	}
	if _, err := checkpoints.WriteSharded(tmp, entries, opt.MaxShard, map[string]string{"format": "pt"}); err != nil {
		return fail(err)
	}
	cfgJSON, err := p.Target.JSON()
	if err != nil {
		return fail(err)
	}
	if err := checkpoints.WriteFileAtomic(filepath.Join(tmp, "config.json"), cfgJSON); err != nil {
		return fail(err)
	}
	for _, f := range tokenizerFiles {
		if b, err := os.ReadFile(filepath.Join(srcDir, f)); err == nil {
			if err := checkpoints.WriteFileAtomic(filepath.Join(tmp, f), b); err != nil {
				return fail(err)
			}
		}
	}
	rb, _ := json.MarshalIndent(rep, "", "  ")
	if err := checkpoints.WriteFileAtomic(filepath.Join(tmp, ReportFile), append(rb, '\n')); err != nil {
		return fail(err)
	}
	os.Remove(opt.Out) // an empty directory may stand in the way
	if err := os.Rename(tmp, opt.Out); err != nil {
		return fail(fmt.Errorf("prune: %w", err))
	}
	if err := checkpoints.SyncDir(parent); err != nil {
		return nil, err
	}
	return rep, nil
}

// selection returns the kept indices along an axis of a parameter of
// target layer l (nil: keep all).
func (p *Plan) selection(ax model.Axis, l int) []int {
	switch ax {
	case model.AxisHidden:
		return p.Hidden
	case model.AxisQ:
		hd := p.Source.HeadDim
		var rows []int
		for _, h := range p.Heads[l] {
			for d := range hd {
				rows = append(rows, h*hd+d)
			}
		}
		return rows
	case model.AxisFFN:
		return p.FFN[l]
	}
	return nil
}

// sliceEntry streams parameter tp: the rows and columns sel of the source
// tensor, in its dtype, a block of rows at a time, releasing the source
// pages behind it.
func sliceEntry(ts *checkpoints.Tensors, tp model.Param, info *checkpoints.Info, sel [][]int, progress func(int64), ctx context.Context) checkpoints.Entry {
	es := int64(info.DType.Size())
	rows, cols := 1, info.Shape[0]
	rowSel, colSel := []int(nil), sel[0]
	if len(info.Shape) == 2 {
		rows, cols = info.Shape[0], info.Shape[1]
		rowSel, colSel = sel[0], sel[1]
	}
	if rowSel == nil {
		rowSel = make([]int, rows)
		for i := range rowSel {
			rowSel[i] = i
		}
	}
	// Contiguous runs of kept columns, copied with one copy each.
	type run struct{ from, n int }
	var runs []run
	if colSel == nil {
		runs = []run{{0, cols}}
	} else {
		for i := 0; i < len(colSel); {
			j := i + 1
			for j < len(colSel) && colSel[j] == colSel[j-1]+1 {
				j++
			}
			runs = append(runs, run{colSel[i], j - i})
			i = j
		}
	}
	outCols := 0
	for _, r := range runs {
		outCols += r.n
	}
	return checkpoints.Entry{Name: tp.Name, DType: info.DType, Shape: tp.Shape, Stream: func(w io.Writer) error {
		src, err := ts.Bytes(info.Name)
		if err != nil {
			return err
		}
		rowBytes := int64(cols) * es
		outRow := int64(outCols) * es
		block := max(1, int((4<<20)/max(outRow, 1)))
		buf := make([]byte, int64(block)*outRow)
		released := int64(0)
		// Scattered columns (short runs) of 2-byte elements are gathered
		// element by element, the block's rows split across cores; long
		// runs are copied whole.
		gather := es == 2 && colSel != nil && outCols/len(runs) < 8
		// The next block's source pages are read in while this one is sliced.
		prefetch := func(i int) chan struct{} {
			done := make(chan struct{})
			go func() {
				defer close(done)
				if i < len(rowSel) {
					hi := min(i+block, len(rowSel))
					first, last := int64(rowSel[i])*rowBytes, int64(rowSel[hi-1]+1)*rowBytes
					ts.PrefetchRange(info.Name, first, last-first)
				}
			}()
			return done
		}
		next := prefetch(0)
		for i := 0; i < len(rowSel); i += block {
			if err := ctx.Err(); err != nil {
				<-next
				return err
			}
			<-next
			next = prefetch(i + block)
			hi := min(i+block, len(rowSel))
			buf := buf[:int64(hi-i)*outRow]
			if gather {
				gatherRows16(buf, src, rowSel[i:hi], colSel, cols)
			} else {
				off := 0
				for _, r := range rowSel[i:hi] {
					base := int64(r) * rowBytes
					for _, c := range runs {
						off += copy(buf[off:], src[base+int64(c.from)*es:base+int64(c.from+c.n)*es])
					}
				}
			}
			if _, err := w.Write(buf); err != nil {
				<-next
				return err
			}
			progress(int64(len(buf)))
			// Rows are read in ascending order: everything before the
			// last row read is done with.
			if upto := int64(rowSel[hi-1]) * rowBytes; upto > released {
				ts.ReleaseRange(info.Name, released, upto-released)
				released = upto
			}
		}
		<-next
		ts.Release(info.Name)
		return nil
	}}
}

// gatherRows16 writes, for each row r of rows, the 2-byte elements of
// src's row r (of cols elements) at columns sel into dst, in parallel over
// rows.
func gatherRows16(dst, src []byte, rows, sel []int, cols int) {
	s16 := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(src))), len(src)/2)
	d16 := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)/2)
	workers := max(1, min(runtime.GOMAXPROCS(0), len(rows)))
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*len(rows)/workers, (w+1)*len(rows)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				row := s16[rows[i]*cols : (rows[i]+1)*cols]
				out := d16[i*len(sel) : (i+1)*len(sel)]
				for j, c := range sel {
					out[j] = row[c]
				}
			}
		}()
	}
	wg.Wait()
}
