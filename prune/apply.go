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
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
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
	// How the source was read (not part of the report file).
	SourceBytes, BytesRead int64 `json:"-"`
	DirectIO               bool  `json:"-"`
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

// ReadReport reads the report of a pruned directory.
func ReadReport(dir string) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("prune: %s: %v", filepath.Join(dir, ReportFile), err)
	}
	return &r, nil
}

// ApplyOptions control Apply.
type ApplyOptions struct {
	Out        string
	MaxShard   int64 // bytes per safetensors shard, default 5 GB
	ScoresPath string
	ScoresMeta map[string]string
	// Read is how the source is read: ReadAuto (the default), ReadDirect or
	// ReadBuffered.
	Read string
	// Progress receives output bytes written out of the total.
	Progress func(done, total int64)
}

// How Apply reads the source.
const (
	// ReadAuto reads a source of 256 MB or more directly unless most of it
	// is in the page cache already, and smaller ones through the cache.
	ReadAuto = "auto"
	// ReadDirect bypasses the page cache (Linux; elsewhere it reads
	// buffered): a source larger than memory is read once, from disk, and
	// evicts nothing.
	ReadDirect = "direct"
	// ReadBuffered reads through the page cache: fastest when the source
	// is already cached.
	ReadBuffered = "buffered"
)

// directAuto is the source size from which ReadAuto considers direct I/O.
const directAuto = 256 << 20

// directIO resolves a Read mode for a source of size bytes of which the
// fraction resident (-1: unknown) is in the page cache.
func directIO(mode string, size int64, resident func() float64) (bool, error) {
	switch mode {
	case ReadDirect:
		return true, nil
	case ReadBuffered:
		return false, nil
	case "", ReadAuto:
		if size < directAuto {
			return false, nil
		}
		r := resident()
		return r >= 0 && r < 0.5, nil
	}
	return false, fmt.Errorf("prune: read mode %q: use %s, %s or %s", mode, ReadAuto, ReadDirect, ReadBuffered)
}

// Apply writes the pruned model of plan p, read from srcDir, to opt.Out as
// a Hugging Face directory. The directory appears only when complete.
func Apply(ctx context.Context, p *Plan, srcDir string, opt ApplyOptions) (*Report, error) {
	if opt.MaxShard <= 0 {
		opt.MaxShard = 5 << 30
	}
	if err := diskio.Vacant(opt.Out); err != nil {
		return nil, fmt.Errorf("prune: %s already exists; remove it or choose another --out", opt.Out)
	}
	ts, err := checkpoints.Open(srcDir)
	if err != nil {
		return nil, err
	}
	defer ts.Close()
	var size int64
	for _, f := range ts.Files() {
		size += f.Size()
	}
	direct, err := directIO(opt.Read, size, ts.ResidentFraction)
	if err != nil {
		return nil, err
	}
	rd := checkpoints.NewSpanReader(ts, direct)
	defer rd.Close()
	srcParams := map[string]model.Param{}
	for _, q := range p.Source.Params() {
		srcParams[q.Name] = q
	}
	var entries []checkpoints.Entry
	var slices []*slice
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
		slices = append(slices, newSlice(tp, info, sel))
	}
	ra := startReadAhead(ctx, rd, slices)
	defer ra.stop()
	for _, sl := range slices {
		e := sl.entry(ra, func(n int64) {
			done += n
			if opt.Progress != nil {
				opt.Progress(done, total)
			}
		})
		total += e.Size()
		entries = append(entries, e)
	}
	rep := &Report{Source: srcDir, Scores: opt.ScoresPath, ScoresMeta: opt.ScoresMeta, ShapeBefore: shapeOf(p.Source), ShapeAfter: shapeOf(p.Target),
		ParamsBefore: p.ParamsBefore, ParamsAfter: p.ParamsAfter, Kept: Kept{Layers: p.Layers, Hidden: p.Hidden, Heads: p.Heads, FFN: p.FFN}}
	err = diskio.WriteDir(opt.Out, false, func(tmp string) error {
		if _, err := checkpoints.WriteSharded(tmp, entries, opt.MaxShard, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		cfgJSON, err := p.Target.JSON()
		if err != nil {
			return err
		}
		if err := diskio.WriteFileAtomic(filepath.Join(tmp, "config.json"), cfgJSON); err != nil {
			return err
		}
		if _, err := tokenizer.CopyDirFiles(srcDir, tmp); err != nil {
			return err
		}
		rb, _ := json.MarshalIndent(rep, "", "  ")
		return diskio.WriteFileAtomic(filepath.Join(tmp, ReportFile), append(rb, '\n'))
	})
	if err != nil {
		return nil, err
	}
	rep.SourceBytes, rep.BytesRead = size, rd.BytesRead()
	rep.DirectIO = direct && len(slices) > 0 && rd.Direct(slices[0].info.Name) // false after a fallback
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

// slice is one output tensor: the rows rowSel and column runs of a source
// tensor, produced a block of rows at a time.
type slice struct {
	tp            model.Param
	info          *checkpoints.Info
	rowSel        []int
	colSel        []int
	runs          []colRun
	es, rowBytes  int64
	outRow        int64
	block, blocks int
}

// colRun is a run of consecutive kept columns.
type colRun struct{ from, n int }

func newSlice(tp model.Param, info *checkpoints.Info, sel [][]int) *slice {
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
	var runs []colRun
	if colSel == nil {
		runs = []colRun{{0, cols}}
	} else {
		for i := 0; i < len(colSel); {
			j := i + 1
			for j < len(colSel) && colSel[j] == colSel[j-1]+1 {
				j++
			}
			runs = append(runs, colRun{colSel[i], j - i})
			i = j
		}
	}
	outCols := 0
	for _, r := range runs {
		outCols += r.n
	}
	s := &slice{tp: tp, info: info, rowSel: rowSel, colSel: colSel, runs: runs, es: es, rowBytes: int64(cols) * es, outRow: int64(outCols) * es}
	// Blocks of up to 8 MB out and 32 MB in.
	s.block = max(1, int(min((8<<20)/max(s.outRow, 1), (32<<20)/max(s.rowBytes, 1))))
	s.blocks = (len(rowSel) + s.block - 1) / s.block
	return s
}

// spans are the source rows of block b.
func (s *slice) spans(b int) []checkpoints.Span {
	rows := s.rowSel[b*s.block : min((b+1)*s.block, len(s.rowSel))]
	spans := make([]checkpoints.Span, len(rows))
	for k, r := range rows {
		spans[k] = checkpoints.Span{Off: int64(r) * s.rowBytes, Len: s.rowBytes}
	}
	return spans
}

// cut writes the kept columns of the rows of a block, read into src with
// row k at byte pos[k], to out.
func (s *slice) cut(out, src []byte, pos []int64) {
	// Scattered columns (short runs) of 2-byte elements are gathered
	// element by element, the rows split across cores; long runs are
	// copied whole.
	if s.es == 2 && s.colSel != nil && len(s.colSel)/len(s.runs) < 8 {
		gatherRows16(out, src, pos, s.colSel)
		return
	}
	off := 0
	for _, at := range pos {
		for _, c := range s.runs {
			off += copy(out[off:], src[at+int64(c.from)*s.es:at+int64(c.from+c.n)*s.es])
		}
	}
}

// readAhead reads the blocks of every slice, in the order they are
// written, a few blocks ahead of the writer: reading (the disk) overlaps
// cutting and writing, also across tensors.
type readAhead struct {
	ctx     context.Context
	results chan block
	free    chan []byte
	cancel  context.CancelFunc
	done    chan struct{}
}

// block is one block read: the b-th of slice s.
type block struct {
	s   *slice
	b   int
	buf []byte
	pos []int64
	err error
}

// aheadBlocks is how many blocks are read ahead (each up to 32 MB).
const aheadBlocks = 3

func startReadAhead(ctx context.Context, rd *checkpoints.SpanReader, slices []*slice) *readAhead {
	ctx, cancel := context.WithCancel(ctx)
	ra := &readAhead{ctx: ctx, results: make(chan block, aheadBlocks), free: make(chan []byte, aheadBlocks+1), cancel: cancel, done: make(chan struct{})}
	for range aheadBlocks + 1 {
		ra.free <- nil
	}
	go func() {
		defer close(ra.done)
		defer close(ra.results)
		for _, s := range slices {
			for b := range s.blocks {
				var buf []byte
				select {
				case buf = <-ra.free:
				case <-ctx.Done():
					return
				}
				buf, pos, err := rd.Read(s.info.Name, s.spans(b), buf)
				select {
				case ra.results <- block{s, b, buf, pos, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}
	}()
	return ra
}

// next returns block b of s, which must be the next one read.
func (ra *readAhead) next(s *slice, b int) (block, error) {
	blk, ok := <-ra.results
	if !ok {
		if err := ra.ctx.Err(); err != nil {
			return blk, err
		}
		return blk, fmt.Errorf("prune: reading %s stopped", s.info.Name)
	}
	if blk.err != nil {
		return blk, blk.err
	}
	if blk.s != s || blk.b != b {
		return blk, fmt.Errorf("prune: internal error: read block %d of %s, but the writer wants block %d of %s", blk.b, blk.s.info.Name, b, s.info.Name)
	}
	return blk, nil
}

// stop ends the reading and waits for it.
func (ra *readAhead) stop() {
	ra.cancel()
	<-ra.done
}

// entry streams slice s from ra.
func (s *slice) entry(ra *readAhead, progress func(int64)) checkpoints.Entry {
	return checkpoints.Entry{Name: s.tp.Name, DType: s.info.DType, Shape: s.tp.Shape, Stream: func(w io.Writer) error {
		out := make([]byte, int64(min(s.block, len(s.rowSel)))*s.outRow)
		for b := range s.blocks {
			blk, err := ra.next(s, b)
			if err != nil {
				return err
			}
			out := out[:int64(len(blk.pos))*s.outRow]
			s.cut(out, blk.buf, blk.pos)
			ra.free <- blk.buf
			if _, err := w.Write(out); err != nil {
				return err
			}
			progress(int64(len(out)))
		}
		return nil
	}}
}

// gatherRows16 writes, for each source row starting at byte at[i] of src,
// its 2-byte elements at columns sel into row i of dst, in parallel over
// rows.
func gatherRows16(dst, src []byte, at []int64, sel []int) {
	rows := len(at)
	workers := max(1, min(runtime.GOMAXPROCS(0), rows))
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*rows/workers, (w+1)*rows/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				row := unsafe.Slice((*uint16)(unsafe.Pointer(&src[at[i]])), (len(src)-int(at[i]))/2)
				out := unsafe.Slice((*uint16)(unsafe.Pointer(&dst[i*2*len(sel)])), len(sel))
				for j, c := range sel {
					out[j] = row[c]
				}
			}
		}()
	}
	wg.Wait()
}
