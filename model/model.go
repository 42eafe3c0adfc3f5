// Package model holds the architectures: config.json, the ordered parameter
// table every other package uses, and the Nemotron and Llama blocks as
// explicit forward (and backward) functions over backend ops, with a KV cache
// for decoding and an observer hook for activation statistics.
package model

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/diskio"
)

// Layer holds one transformer block's weights. Norm biases are nil for
// Llama, Gate is nil for Nemotron.
type Layer struct {
	InNormW, InNormB     backend.Tensor
	Q, K, V, O           backend.Tensor
	PostNormW, PostNormB backend.Tensor
	Gate, Up, Down       backend.Tensor
}

// Model is a decoder-only transformer whose weights live on a backend.
type Model struct {
	Config  *Config
	Backend backend.Backend
	// Params is Config.Params(); Weights[i] holds Params[i].
	Params  []Param
	Weights []backend.Tensor

	Embed, LMHead, NormW, NormB backend.Tensor
	Layers                      []Layer

	rope backend.RoPE
	// DiskDTypes records the on-disk dtype of each loaded parameter.
	DiskDTypes []backend.DType
}

// New makes a model with zero weights on b.
func New(cfg *Config, b backend.Backend) (*Model, error) {
	m := newModel(cfg, b)
	for i, p := range m.Params {
		t, err := b.New(b.FloatDType(), p.Shape...)
		if err != nil {
			return nil, fmt.Errorf("model: %s: %w", p.Name, err)
		}
		m.Weights[i] = t
	}
	m.bind()
	return m, nil
}

func newModel(cfg *Config, b backend.Backend) *Model {
	ps := cfg.Params()
	return &Model{
		Config:  cfg,
		Backend: b,
		Params:  ps,
		Weights: make([]backend.Tensor, len(ps)),
		rope:    backend.RoPE{HeadDim: cfg.HeadDim, RotDim: cfg.RotaryDim(), InvFreq: cfg.InvFreq()},
	}
}

// bind points the named fields at the weights by role.
func (m *Model) bind() {
	m.Layers = make([]Layer, m.Config.NumLayers)
	for i, p := range m.Params {
		w := m.Weights[i]
		var L *Layer
		if p.Layer >= 0 {
			L = &m.Layers[p.Layer]
		}
		switch p.Role {
		case Embed:
			m.Embed = w
		case LMHead:
			m.LMHead = w
		case FinalNormWeight:
			m.NormW = w
		case FinalNormBias:
			m.NormB = w
		case InputNormWeight:
			L.InNormW = w
		case InputNormBias:
			L.InNormB = w
		case QProj:
			L.Q = w
		case KProj:
			L.K = w
		case VProj:
			L.V = w
		case OProj:
			L.O = w
		case PostNormWeight:
			L.PostNormW = w
		case PostNormBias:
			L.PostNormB = w
		case GateProj:
			L.Gate = w
		case UpProj:
			L.Up = w
		case DownProj:
			L.Down = w
		}
	}
	if m.Config.TieEmbeddings {
		m.LMHead = m.Embed
	}
}

// Progress receives the bytes done out of a total during long operations.
type Progress func(done, total int64)

// Load reads a Hugging Face checkpoint directory (config.json and
// safetensors) onto b, converting each tensor from its disk dtype once.
// Tensors are read one at a time from the memory map and released, so the
// process never holds two copies of the weights.
func Load(dir string, b backend.Backend, progress Progress) (*Model, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	ts, err := checkpoints.Open(dir)
	if err != nil {
		return nil, err
	}
	defer ts.Close()
	return FromTensors(cfg, ts, b, progress)
}

// FromTensors loads the parameters of cfg from an open tensor set.
func FromTensors(cfg *Config, ts *checkpoints.Tensors, b backend.Backend, progress Progress) (*Model, error) {
	m := newModel(cfg, b)
	m.DiskDTypes = make([]backend.DType, len(m.Params))
	var total, done int64
	for _, p := range m.Params {
		if info, ok := ts.Info(p.Name); ok {
			total += info.End - info.Begin
		}
	}
	for i, p := range m.Params {
		info, ok := ts.Info(p.Name)
		if !ok {
			return nil, fmt.Errorf("model: %s: missing tensor %q required by the %s config", ts.Source, p.Name, cfg.Architecture)
		}
		if !info.DType.IsFloat() {
			return nil, fmt.Errorf("model: %s: tensor %q is %v, want a float dtype", info.File, p.Name, info.DType)
		}
		v, err := ts.Float32(p.Name, p.Shape...)
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		ts.Release(p.Name)
		if err := checkFinite(v); err != nil {
			return nil, fmt.Errorf("model: %s: tensor %q: %w", info.File, p.Name, err)
		}
		t, err := b.FromFloat32(v, p.Shape...)
		if err != nil {
			return nil, fmt.Errorf("model: %s: %w", p.Name, err)
		}
		m.Weights[i] = t
		m.DiskDTypes[i] = info.DType
		done += info.End - info.Begin
		if progress != nil {
			progress(done, total)
		}
	}
	m.bind()
	return m, nil
}

func checkFinite(v []float32) error {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("element %d is %v; the checkpoint is corrupt", i, x)
		}
	}
	return nil
}

// Entries returns the weights as checkpoint entries in dtype dt, in table
// order, each copied off the backend only when written.
func (m *Model) Entries(dt backend.DType) []checkpoints.Entry { return m.entries(m.Weights, dt) }

// entries makes checkpoint entries of the parameters from the tensors ws
// (aligned with Params).
func (m *Model) entries(ws []backend.Tensor, dt backend.DType) []checkpoints.Entry {
	es := make([]checkpoints.Entry, len(m.Params))
	for i, p := range m.Params {
		w := ws[i]
		es[i] = checkpoints.Entry{Name: p.Name, DType: dt, Shape: p.Shape, Data: func() ([]byte, error) {
			v, err := m.Backend.ToFloat32(w)
			if err != nil {
				return nil, err
			}
			return checkpoints.EncodeFloat32(dt, v)
		}}
	}
	return es
}

// Save writes config.json and the weights (dtype dt, shards of at most
// maxShard bytes) into dir, which must exist.
func (m *Model) Save(dir string, dt backend.DType, maxShard int64) error {
	return m.SaveWeights(dir, m.Weights, dt, maxShard)
}

// SaveWeights is Save with the values of each parameter taken from ws
// (aligned with Params) instead of the model's weights: a trainer's
// float32 master copies, of which the model holds bfloat16 roundings.
func (m *Model) SaveWeights(dir string, ws []backend.Tensor, dt backend.DType, maxShard int64) error {
	if len(ws) != len(m.Params) {
		panic(fmt.Sprintf("model: SaveWeights with %d tensors for %d parameters", len(ws), len(m.Params)))
	}
	cfgJSON, err := m.Config.JSON()
	if err != nil {
		return err
	}
	if _, err := checkpoints.WriteSharded(dir, m.entries(ws, dt), maxShard, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return diskio.WriteFileAtomic(filepath.Join(dir, "config.json"), cfgJSON)
}

// Free releases the weights.
func (m *Model) Free() {
	for _, w := range m.Weights {
		if w != nil {
			m.Backend.Free(w)
		}
	}
}

// DirSize sums the sizes of the safetensors files in a checkpoint directory.
func DirSize(dir string) int64 {
	var n int64
	matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	for _, f := range matches {
		if st, err := os.Stat(f); err == nil {
			n += st.Size()
		}
	}
	return n
}
