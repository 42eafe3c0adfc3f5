package data

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
)

// Split is a set of packed sequences of a dataset. Sequence g of the
// dataset holds SeqLen+1 tokens starting at stream offset g·SeqLen: the
// inputs and their next-token targets. Documents are packed back to back
// (no padding). A split is a list of blocks of consecutive sequences.
type Split struct {
	DS     *Dataset
	SeqLen int
	Count  int64   // sequences in the split
	blocks []int64 // dataset blocks of the split, ascending
	tail   int64   // sequences of the final partial block (train split only)
	full   int64   // full blocks in the dataset
}

// splitBlock is the number of consecutive sequences held out together:
// whole blocks go to validation, so few validation tokens neighbour
// training ones.
const splitBlock = 64

// Sequences returns the number of sequences of seqLen tokens the dataset holds.
func (d *Dataset) Sequences(seqLen int) int64 {
	if seqLen <= 0 || d.Manifest.Tokens < int64(seqLen)+1 {
		return 0
	}
	return (d.Manifest.Tokens - 1) / int64(seqLen)
}

// Split divides the dataset's sequences into training and validation. A
// seeded random choice of valFraction of the blocks of 64 consecutive
// sequences is held out (at least one block when valFraction > 0), so the
// validation set samples the whole corpus, whatever order its files were
// in, and no validation sequence is trained on.
func (d *Dataset) Split(seqLen int, valFraction float64) (train, val Split, err error) {
	if seqLen <= 0 {
		return Split{}, Split{}, fmt.Errorf("data: sequence length %d must be positive", seqLen)
	}
	if valFraction < 0 || valFraction >= 1 {
		return Split{}, Split{}, fmt.Errorf("data: validation fraction %v must be in [0, 1)", valFraction)
	}
	n := d.Sequences(seqLen)
	full, tail := n/splitBlock, n%splitBlock
	nv := int64(math.Ceil(float64(full) * valFraction))
	if valFraction > 0 && full < 2 || n-nv*splitBlock < 1 {
		return Split{}, Split{}, fmt.Errorf("data: %s holds %d tokens: too few for %.1f%% validation and training sequences of %d tokens (need at least %d)",
			d.Dir, d.Manifest.Tokens, 100*valFraction, seqLen+1, 2*splitBlock*seqLen+1)
	}
	p := newPermutation(uint64(max(full, 1)), 0x5eed, 0xba1)
	isVal := make(map[int64]bool, nv)
	for i := range nv {
		isVal[int64(p.at(uint64(i)))] = true
	}
	train = Split{DS: d, SeqLen: seqLen, tail: tail, full: full}
	val = Split{DS: d, SeqLen: seqLen, full: full}
	for b := range full {
		if isVal[b] {
			val.blocks = append(val.blocks, b)
		} else {
			train.blocks = append(train.blocks, b)
		}
	}
	train.Count = int64(len(train.blocks))*splitBlock + tail
	val.Count = int64(len(val.blocks)) * splitBlock
	return train, val, nil
}

// Index maps a split's sequence number to the dataset's.
func (s Split) Index(i int64) int64 {
	if k := i / splitBlock; k < int64(len(s.blocks)) {
		return s.blocks[k]*splitBlock + i%splitBlock
	}
	return s.full*splitBlock + (i - int64(len(s.blocks))*splitBlock)
}

// Read appends sequence i of the split (SeqLen+1 tokens) to dst.
func (s Split) Read(dst []int32, i int64) ([]int32, error) {
	if i < 0 || i >= s.Count {
		return dst, fmt.Errorf("data: sequence %d outside the split's %d", i, s.Count)
	}
	return s.DS.Read(dst, s.Index(i)*int64(s.SeqLen), int64(s.SeqLen)+1)
}

// permutation is a seeded bijection of [0, n) computed on demand (a Feistel
// network with cycle walking), so shuffling needs no O(n) memory.
type permutation struct {
	n    uint64
	half uint
	keys [4]uint64
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newPermutation(n uint64, seed, stream uint64) permutation {
	p := permutation{n: n}
	b := uint(bits.Len64(max(n-1, 1)))
	p.half = (b + 1) / 2
	k := splitmix(seed ^ splitmix(stream))
	for i := range p.keys {
		k = splitmix(k + uint64(i))
		p.keys[i] = k
	}
	return p
}

func (p permutation) at(i uint64) uint64 {
	mask := uint64(1)<<p.half - 1
	x := i
	for {
		l, r := x>>p.half, x&mask
		for _, k := range p.keys {
			l, r = r, l^(splitmix(r^k)&mask)
		}
		x = l<<p.half | r
		if x < p.n {
			return x
		}
	}
}

// Source is a split with a blend weight.
type Source struct {
	Name   string
	Split  Split
	Weight float64
}

// Cursor is a loader's position: the number of sequences drawn and how many
// came from each source. Saved and restored, it makes a loader continue
// with exactly the sequences an uninterrupted one would give.
type Cursor struct {
	Drawn  int64   `json:"drawn"`
	Counts []int64 `json:"counts"`
}

// Loader draws sequences from a weighted blend of sources: the next sequence
// comes from the source whose share is furthest below its weight (as
// Megatron blends), and each source yields its sequences in a seeded
// permutation that changes every epoch (or in order, without shuffle).
type Loader struct {
	sources []Source
	weights []float64
	seed    uint64
	shuffle bool
	cur     Cursor
	perms   map[[2]uint64]permutation
	last    []SeqRef
}

// NewLoader makes a loader over sources (weights need not sum to 1).
func NewLoader(sources []Source, seed uint64, shuffle bool) (*Loader, error) {
	if len(sources) == 0 {
		return nil, fmt.Errorf("data: no datasets to load")
	}
	var total float64
	for _, s := range sources {
		if s.Weight <= 0 || math.IsNaN(s.Weight) || math.IsInf(s.Weight, 0) {
			return nil, fmt.Errorf("data: dataset %q has weight %v; weights must be positive", s.Name, s.Weight)
		}
		if s.Split.Count == 0 {
			return nil, fmt.Errorf("data: dataset %q has no sequences of %d tokens", s.Name, s.Split.SeqLen+1)
		}
		if s.Split.SeqLen != sources[0].Split.SeqLen {
			return nil, fmt.Errorf("data: datasets have different sequence lengths")
		}
		total += s.Weight
	}
	l := &Loader{sources: sources, seed: seed, shuffle: shuffle, perms: map[[2]uint64]permutation{}}
	for _, s := range sources {
		l.weights = append(l.weights, s.Weight/total)
	}
	l.cur.Counts = make([]int64, len(sources))
	return l, nil
}

// Cursor returns the current position.
func (l *Loader) Cursor() Cursor {
	return Cursor{Drawn: l.cur.Drawn, Counts: append([]int64(nil), l.cur.Counts...)}
}

// SetCursor moves to a saved position.
func (l *Loader) SetCursor(c Cursor) error {
	if len(c.Counts) != len(l.sources) {
		return fmt.Errorf("data: the saved data position covers %d datasets, the blend has %d", len(c.Counts), len(l.sources))
	}
	var sum int64
	for _, n := range c.Counts {
		sum += n
	}
	if sum != c.Drawn {
		return fmt.Errorf("data: inconsistent data position %+v", c)
	}
	l.cur = Cursor{Drawn: c.Drawn, Counts: append([]int64(nil), c.Counts...)}
	return nil
}

// Ref names one drawn sequence.
type Ref struct {
	Source int   // index of the source
	Epoch  int64 // pass over that source
	Index  int64 // sequence index within the source's split
}

// pick chooses the source of the next sequence.
func (l *Loader) pick() int {
	best, bestGap := 0, math.Inf(-1)
	next := float64(l.cur.Drawn + 1)
	for i, w := range l.weights {
		if gap := w*next - float64(l.cur.Counts[i]); gap > bestGap {
			best, bestGap = i, gap
		}
	}
	return best
}

// Next appends the next sequence (SeqLen+1 tokens) to dst.
func (l *Loader) Next(dst []int32) ([]int32, Ref, error) {
	i := l.pick()
	s := l.sources[i]
	k := l.cur.Counts[i]
	ref := Ref{Source: i, Epoch: k / s.Split.Count, Index: k % s.Split.Count}
	if l.shuffle {
		key := [2]uint64{uint64(i), uint64(ref.Epoch)}
		p, ok := l.perms[key]
		if !ok {
			if len(l.perms) > 64 {
				clear(l.perms)
			}
			p = newPermutation(uint64(s.Split.Count), l.seed, uint64(i)<<32|uint64(ref.Epoch))
			l.perms[key] = p
		}
		ref.Index = int64(p.at(uint64(ref.Index)))
	}
	dst, err := s.Split.Read(dst, ref.Index)
	if err != nil {
		return dst, ref, err
	}
	l.cur.Counts[i]++
	l.cur.Drawn++
	return dst, ref, nil
}

// Skip moves past the next n sequences without reading them: those that
// other ranks of a data-parallel run read. The position afterwards is the
// one n draws would reach.
func (l *Loader) Skip(n int) {
	for range n {
		i := l.pick()
		l.cur.Counts[i]++
		l.cur.Drawn++
	}
}

// Batch draws n sequences into one row-major [n, SeqLen+1] slice.
func (l *Loader) Batch(n int) ([]int32, error) {
	out := make([]int32, 0, n*(l.SeqLen()+1))
	l.last = l.last[:0]
	for range n {
		var err error
		var ref Ref
		if out, ref, err = l.Next(out); err != nil {
			return nil, err
		}
		l.last = append(l.last, SeqRef{Source: ref.Source, Sequence: l.sources[ref.Source].Split.Index(ref.Index)})
	}
	return out, nil
}

// SeqRef names a sequence by its source and its index in the source's
// dataset (sequence g starts at stream token g·SeqLen).
type SeqRef struct {
	Source   int
	Sequence int64
}

// Refs returns where the sequences of the last Batch came from.
func (l *Loader) Refs() []SeqRef { return append([]SeqRef(nil), l.last...) }

// Sources returns the loader's sources.
func (l *Loader) Sources() []Source { return l.sources }

// SeqLen is the length of the sequences' inputs.
func (l *Loader) SeqLen() int { return l.sources[0].Split.SeqLen }

// CalibrationSample is a reproducible draw of sequences for importance
// estimation: which ones, from where, with which seed.
type CalibrationSample struct {
	Dataset   string  `json:"dataset"`
	Tokenizer string  `json:"tokenizer"` // the hash of the tokenizer the dataset was prepared with
	Seed      uint64  `json:"seed"`
	SeqLen    int     `json:"seq_len"`
	Indices   []int64 `json:"indices"` // sequence indices in the dataset (stride SeqLen)
	IDs       []int32 `json:"-"`       // [len(Indices), SeqLen] token ids
}

// Meta records the draw in importance scores' metadata: the dataset, the
// seed, the sequences drawn and the dataset's tokenizer.
func (c *CalibrationSample) Meta() map[string]string {
	idx, _ := json.Marshal(c.Indices)
	return map[string]string{"calibration_source": c.Dataset, "calibration_seed": fmt.Sprint(c.Seed),
		"calibration_indices": string(idx), "calibration_dataset_tokenizer": c.Tokenizer}
}

// CalibrationFrom draws n distinct sequences of a split (the training
// split, so importance never sees validation text) with a seed, in the
// order of a seeded permutation, each cut to its first seqLen tokens (at
// most the split's length). Indices count sequences of the split's length.
func CalibrationFrom(s Split, n, seqLen int, seed uint64) (*CalibrationSample, error) {
	if seqLen < 1 || seqLen > s.SeqLen {
		return nil, fmt.Errorf("data: calibration sequences of %d tokens cannot be cut from sequences of %d", seqLen, s.SeqLen)
	}
	if int64(n) > s.Count || n <= 0 {
		return nil, fmt.Errorf("data: the split of %s holds %d sequences of %d tokens; cannot draw %d", s.DS.Dir, s.Count, s.SeqLen, n)
	}
	p := newPermutation(uint64(s.Count), seed, 0xca11b)
	c := &CalibrationSample{Dataset: s.DS.Dir, Tokenizer: s.DS.Manifest.Tokenizer.Hash, Seed: seed, SeqLen: seqLen}
	for i := range n {
		idx := s.Index(int64(p.at(uint64(i))))
		var err error
		if c.IDs, err = s.DS.Read(c.IDs, idx*int64(s.SeqLen), int64(seqLen)); err != nil {
			return nil, err
		}
		c.Indices = append(c.Indices, idx)
	}
	return c, nil
}

// Calibration draws n distinct sequences of seqLen tokens from a dataset
// with a seed, in the order of a seeded permutation.
func Calibration(d *Dataset, n, seqLen int, seed uint64) (*CalibrationSample, error) {
	total := d.Sequences(seqLen)
	if int64(n) > total || n <= 0 {
		return nil, fmt.Errorf("data: %s holds %d sequences of %d tokens; cannot draw %d", d.Dir, total, seqLen, n)
	}
	p := newPermutation(uint64(total), seed, 0xca11b)
	c := &CalibrationSample{Dataset: d.Dir, Tokenizer: d.Manifest.Tokenizer.Hash, Seed: seed, SeqLen: seqLen}
	for i := range n {
		idx := int64(p.at(uint64(i)))
		var err error
		if c.IDs, err = d.Read(c.IDs, idx*int64(seqLen), int64(seqLen)); err != nil {
			return nil, err
		}
		c.Indices = append(c.Indices, idx)
	}
	return c, nil
}
