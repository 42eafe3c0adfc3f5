package importance

import (
	"fmt"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
)

// Tensor names of a scores file (the fixtures' names).
const (
	NameHead      = "importance.head"
	NameNeuron    = "importance.neuron"
	NameEmbedding = "importance.embedding"
	NameLayerBI   = "importance.layer_bi"
	NameLayerLoss = "importance.layer_loss_without"
	// NameBlockBI is [L, L]: row i, column j ≥ i the Block Importance of
	// layers i..j (entries below the diagonal are 0).
	NameBlockBI   = "importance.block_bi"
	NameCalibLoss = "calibration_loss"
)

func flatten(m [][]float32) []float32 {
	var out []float32
	for _, r := range m {
		out = append(out, r...)
	}
	return out
}

// Save writes the scores and their metadata to a safetensors file, atomically.
func (s *Scores) Save(path string) error {
	L := len(s.Head)
	es := []checkpoints.Entry{
		checkpoints.FloatEntry(NameHead, backend.F32, []int{L, len(s.Head[0])}, flatten(s.Head)),
		checkpoints.FloatEntry(NameNeuron, backend.F32, []int{L, len(s.Neuron[0])}, flatten(s.Neuron)),
		checkpoints.FloatEntry(NameEmbedding, backend.F32, []int{len(s.Embedding)}, s.Embedding),
		checkpoints.FloatEntry(NameLayerBI, backend.F32, []int{L}, s.LayerBI),
		checkpoints.FloatEntry(NameCalibLoss, backend.F32, []int{1}, []float32{s.CalibrationLoss}),
	}
	if s.LayerLossWithout != nil {
		es = append(es, checkpoints.FloatEntry(NameLayerLoss, backend.F32, []int{L}, s.LayerLossWithout))
	}
	if s.BlockBI != nil {
		sq := make([]float32, L*L)
		for i, row := range s.BlockBI {
			copy(sq[i*L+i:], row)
		}
		es = append(es, checkpoints.FloatEntry(NameBlockBI, backend.F32, []int{L, L}, sq))
	}
	return checkpoints.WriteFile(path, es, s.Meta)
}

// Load reads a scores file.
func Load(path string) (*Scores, error) {
	ts, err := checkpoints.Open(path)
	if err != nil {
		return nil, err
	}
	defer ts.Close()
	matrix := func(name string) ([][]float32, error) {
		info, ok := ts.Info(name)
		if !ok || len(info.Shape) != 2 {
			return nil, fmt.Errorf("importance: %s: no %s matrix; is this a scores file from `minitron importance`?", path, name)
		}
		v, err := ts.Float32(name)
		if err != nil {
			return nil, err
		}
		var out [][]float32
		for r := range info.Shape[0] {
			out = append(out, v[r*info.Shape[1]:(r+1)*info.Shape[1]])
		}
		return out, nil
	}
	s := &Scores{Meta: map[string]string{}}
	if s.Head, err = matrix(NameHead); err != nil {
		return nil, err
	}
	if s.Neuron, err = matrix(NameNeuron); err != nil {
		return nil, err
	}
	for _, x := range []struct {
		name string
		dst  *[]float32
	}{{NameEmbedding, &s.Embedding}, {NameLayerBI, &s.LayerBI}} {
		if *x.dst, err = ts.Float32(x.name); err != nil {
			return nil, fmt.Errorf("importance: %s: %w", path, err)
		}
	}
	if _, ok := ts.Info(NameLayerLoss); ok {
		if s.LayerLossWithout, err = ts.Float32(NameLayerLoss); err != nil {
			return nil, err
		}
	}
	if _, ok := ts.Info(NameBlockBI); ok {
		sq, err := matrix(NameBlockBI)
		if err != nil {
			return nil, err
		}
		for i, row := range sq {
			s.BlockBI = append(s.BlockBI, row[i:])
		}
	}
	if v, err := ts.Float32(NameCalibLoss); err == nil && len(v) == 1 {
		s.CalibrationLoss = v[0]
	}
	for _, f := range ts.Files() {
		for k, v := range f.Metadata {
			s.Meta[k] = v
		}
	}
	return s, nil
}
