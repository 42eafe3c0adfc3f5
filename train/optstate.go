package train

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
)

// optimizerState reads the optimizer state of a checkpoint tensor by
// tensor, written by one device (optimizer.safetensors, with the weights
// in the model files) or by the ranks of a data-parallel run (their shard
// files): kind w is a tensor's weights as the optimizer holds them (the
// master copies, where there are any), m and v its Adam moments.
type optimizerState struct {
	dir string
	// shards: the pieces of each "KIND.NAME", by first element.
	files  []*checkpoints.File
	pieces map[string][]piece
	// one device: optimizer.safetensors, and the model's weights.
	opt, model *checkpoints.Tensors
}

type piece struct {
	f     *checkpoints.File
	name  string
	start int
	n     int
}

// shardFiles lists the shard files of a checkpoint.
func shardFiles(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "optimizer-*-of-*.safetensors"))
	sort.Strings(m)
	return m
}

func openOptimizerState(dir string) (*optimizerState, error) {
	s := &optimizerState{dir: dir, pieces: map[string][]piece{}}
	files := shardFiles(dir)
	if len(files) == 0 {
		var err error
		if s.opt, err = checkpoints.Open(filepath.Join(dir, optimFile)); err != nil {
			return nil, err
		}
		if s.model, err = checkpoints.Open(dir); err != nil {
			s.close()
			return nil, err
		}
		return s, nil
	}
	var world string
	for _, p := range files {
		f, err := checkpoints.OpenFile(p)
		if err != nil {
			s.close()
			return nil, err
		}
		s.files = append(s.files, f)
		// optimizer-RRRRR-of-WWWWW.safetensors: every file of one run.
		w := strings.TrimSuffix(p[strings.LastIndex(p, "-of-")+4:], ".safetensors")
		if world != "" && w != world {
			s.close()
			return nil, fmt.Errorf("train: %s holds optimizer shards of runs on %s and %s GPUs; remove the checkpoint or the stray files", dir, world, w)
		}
		world = w
		for _, info := range f.Tensors {
			at := strings.LastIndexByte(info.Name, '@')
			start, err := strconv.Atoi(info.Name[at+1:])
			if at < 0 || err != nil || len(info.Shape) != 1 {
				s.close()
				return nil, fmt.Errorf("train: %s: tensor %q is not a piece of optimizer state (KIND.NAME@START)", p, info.Name)
			}
			key := info.Name[:at]
			s.pieces[key] = append(s.pieces[key], piece{f: f, name: info.Name, start: start, n: info.Shape[0]})
		}
	}
	if n, err := strconv.Atoi(world); err != nil || n != len(files) {
		s.close()
		return nil, fmt.Errorf("train: %s holds %d optimizer shards of a run on %s GPUs; the checkpoint is incomplete", dir, len(files), world)
	}
	for _, ps := range s.pieces {
		sort.Slice(ps, func(i, j int) bool { return ps[i].start < ps[j].start })
	}
	return s, nil
}

func (s *optimizerState) close() {
	for _, f := range s.files {
		f.Close()
	}
	for _, t := range []*checkpoints.Tensors{s.opt, s.model} {
		if t != nil {
			t.Close()
		}
	}
}

// read returns elements [lo, lo+n) of kind (w, m or v) of the tensor
// named name (an objective's: "extra." + its name), whose shape is shape.
func (s *optimizerState) read(kind, name string, shape []int, lo, n int) ([]float32, error) {
	if s.opt != nil {
		// One device's names: weights under their own name in the model
		// files (the objective's as extra.NAME in the optimizer file),
		// moments as m.NAME and v.NAME.
		from, key := s.opt, kind+"."+name
		if kind == "w" {
			key = name
			if !strings.HasPrefix(name, "extra.") {
				from = s.model
			}
		}
		v, err := from.Float32(key, shape...)
		if err != nil {
			return nil, fmt.Errorf("train: %s: %w", s.dir, err)
		}
		return v[lo : lo+n], nil
	}
	out := make([]float32, 0, n)
	at := lo
	for _, p := range s.pieces[kind+"."+name] {
		if p.start+p.n <= at || at >= lo+n {
			continue
		}
		if p.start > at {
			break
		}
		info, _ := p.f.Info(p.name)
		raw, err := p.f.Bytes(p.name)
		if err != nil {
			return nil, err
		}
		v, err := checkpoints.DecodeFloat32(info.DType, raw)
		p.f.Release(p.name)
		if err != nil {
			return nil, fmt.Errorf("train: %s: %s: %w", p.f.Path, p.name, err)
		}
		take := min(p.start+p.n, lo+n) - at
		out = append(out, v[at-p.start:at-p.start+take]...)
		at += take
	}
	if at < lo+n {
		return nil, fmt.Errorf("train: %s: the optimizer shards lack %s[%d:%d] of %s (shape %v); the checkpoint was made for another model or objective",
			s.dir, kind, at, lo+n, name, shape)
	}
	return out, nil
}

// shardedCheckpoint reports whether a checkpoint's optimizer state is in shards.
func shardedCheckpoint(dir string) bool { return len(shardFiles(dir)) > 0 }

// restoreFromShards loads a device's optimizer state and weights from a
// checkpoint written by the ranks of a data-parallel run.
func (t *Trainer) restoreFromShards(dir string) error {
	st, err := openOptimizerState(dir)
	if err != nil {
		return err
	}
	defer st.close()
	b := t.Model.Backend
	np := len(t.Model.Params)
	for i := range t.slots {
		s := &t.slots[i]
		var name string
		if i < np {
			name = t.Model.Params[i].Name
		} else {
			name = "extra." + t.extra[i-np].Name
		}
		for _, x := range []struct {
			kind string
			t    backend.Tensor
		}{{"w", s.target()}, {"m", s.m}, {"v", s.v}} {
			v, err := st.read(x.kind, name, x.t.Shape(), 0, backend.Numel(x.t.Shape()))
			if err != nil {
				return err
			}
			if err := b.Write(x.t, v); err != nil {
				return err
			}
		}
		if s.master != nil {
			// The weight is the master rounded to nearest, as after a step.
			if err := b.Copy(s.w, s.master); err != nil {
				return err
			}
		}
	}
	return nil
}
