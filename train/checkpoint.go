package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// A checkpoint directory is a Hugging Face model directory (config.json,
// model.safetensors in float32, the tokenizer when known) plus the training
// state: optimizer.safetensors (Adam moments), state.json and training.yaml.
// With master weights (a GPU), model.safetensors holds the float32 master
// copies, from which the bfloat16 weights are their rounding to nearest,
// so a resumed run continues bit for bit. It is written under a temporary
// name, fsynced and renamed; COMPLETE is its last file, so only finished
// checkpoints are ever resumed from.

const (
	stateFile    = "state.json"
	completeFile = "COMPLETE"
	optimFile    = "optimizer.safetensors"
)

// State is the position of a run.
type State struct {
	Step        int         `json:"step"`
	Tokens      int64       `json:"tokens"`
	TotalSteps  int         `json:"total_steps"`
	Cursor      data.Cursor `json:"data_cursor"`
	Fingerprint string      `json:"config_fingerprint"`
	// GPUs is the number of ranks of a data-parallel run, whose optimizer
	// state is in one shard file per rank; 0 on one device.
	GPUs int `json:"gpus,omitempty"`
	// Identities are RunOptions.Identities and the datasets' (by key).
	Identities map[string]string `json:"identities,omitempty"`
}

func checkpointName(step int) string { return fmt.Sprintf("checkpoint-%07d", step) }

// Checkpoints lists the complete checkpoints of a run directory, oldest first.
func Checkpoints(out string) ([]string, error) {
	entries, err := os.ReadDir(out)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("train: %w", err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "checkpoint-") {
			if _, err := os.Stat(filepath.Join(out, e.Name(), completeFile)); err == nil {
				dirs = append(dirs, filepath.Join(out, e.Name()))
			}
		}
	}
	sort.Strings(dirs)
	return dirs, nil
}

// ExportModel writes m as a Hugging Face directory in dtype dt, with the
// tokenizer file copied in when given (a .model becomes tokenizer.model, a
// .json tokenizer.json). The values come from ws (aligned with m.Params:
// a trainer's master weights) when it is not nil.
func ExportModel(dir string, m *model.Model, ws []backend.Tensor, dt backend.DType, tokenizerPath string) error {
	if ws == nil {
		ws = m.Weights
	}
	return diskio.WriteDir(dir, true, func(tmp string) error {
		if err := m.SaveWeights(tmp, ws, dt, 2<<30); err != nil {
			return err
		}
		return CopyTokenizer(tokenizerPath, tmp)
	})
}

// CopyTokenizer copies a tokenizer file, or a model directory's tokenizer
// and generation files (tokenizer.DirFiles), into dir.
func CopyTokenizer(src, dir string) error {
	if src == "" {
		return nil
	}
	if st, err := os.Stat(src); err == nil && st.IsDir() {
		_, err := tokenizer.CopyDirFiles(src, dir)
		return err
	}
	name := "tokenizer.model"
	if strings.HasSuffix(src, ".json") {
		name = "tokenizer.json"
	}
	return diskio.CopyFile(src, filepath.Join(dir, name))
}

// save writes a checkpoint of the trainer's current step. In a
// data-parallel run, shards is the folder holding the ranks' optimizer
// shards, which move into the checkpoint.
func (t *Trainer) save(out string, cfgYAML []byte, shards string) (string, error) {
	dir := filepath.Join(out, checkpointName(t.Step))
	err := diskio.WriteDir(dir, true, func(tmp string) error {
		if err := t.Model.SaveWeights(tmp, t.modelWeights(), backend.F32, 2<<30); err != nil {
			return err
		}
		if shards != "" {
			return t.finishCheckpoint(tmp, cfgYAML, shards)
		}
		// Moments (and the objective's own parameters) are written as float32
		// whatever their storage, so a run resumes on any device.
		var es []checkpoints.Entry
		add := func(name string, tt backend.Tensor) {
			es = append(es, checkpoints.Entry{Name: name, DType: backend.F32, Shape: tt.Shape(), Data: func() ([]byte, error) {
				v, err := t.Model.Backend.ToFloat32(tt)
				if err != nil {
					return nil, err
				}
				return checkpoints.EncodeFloat32(backend.F32, v)
			}})
		}
		for i, p := range t.Model.Params {
			add("m."+p.Name, t.slots[i].m)
			add("v."+p.Name, t.slots[i].v)
		}
		for i, p := range t.extra {
			s := &t.slots[len(t.Model.Params)+i]
			add("extra."+p.Name, s.target())
			add("m.extra."+p.Name, s.m)
			add("v.extra."+p.Name, s.v)
		}
		if err := checkpoints.WriteFile(filepath.Join(tmp, optimFile), es, map[string]string{"step": fmt.Sprint(t.Step)}); err != nil {
			return err
		}
		return t.finishCheckpoint(tmp, cfgYAML, "")
	})
	return dir, err
}

// finishCheckpoint moves the optimizer shards in from the folder shards
// (if any) and writes the position, the configuration and the tokenizer,
// and COMPLETE last.
func (t *Trainer) finishCheckpoint(tmp string, cfgYAML []byte, shards string) error {
	if shards != "" {
		files := shardFiles(shards)
		if len(files) != t.dp.lay.world {
			return fmt.Errorf("train: %d optimizer shards in %s, want one per GPU, %d (with several nodes, --out must be a folder all of them share)", len(files), shards, t.dp.lay.world)
		}
		for _, f := range files {
			if err := os.Rename(f, filepath.Join(tmp, filepath.Base(f))); err != nil {
				return fmt.Errorf("train: %w", err)
			}
		}
	}
	st := State{Step: t.Step, Tokens: t.Tokens, TotalSteps: t.Total, Cursor: t.Data.Cursor(), Fingerprint: t.Cfg.fingerprint(), Identities: t.identities}
	if t.dp != nil {
		st.GPUs = t.dp.lay.world
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := diskio.WriteFileAtomic(filepath.Join(tmp, stateFile), append(b, '\n')); err != nil {
		return err
	}
	if err := diskio.WriteFileAtomic(filepath.Join(tmp, "training.yaml"), cfgYAML); err != nil {
		return err
	}
	if err := CopyTokenizer(t.Cfg.Model.Tokenizer, tmp); err != nil {
		return err
	}
	return diskio.WriteFileAtomic(filepath.Join(tmp, completeFile), []byte("ok\n"))
}

// readState loads a checkpoint's state.json.
func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("train: %s: invalid JSON: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}

// restore loads the optimizer state and position from a checkpoint. The
// weights were loaded with the model (rounded to its storage); master
// copies are read again from the checkpoint's float32 values.
func (t *Trainer) restore(dir string, st *State) error {
	if shardedCheckpoint(dir) {
		if err := t.restoreFromShards(dir); err != nil {
			return err
		}
		return t.setPosition(dir, st)
	}
	ts, err := checkpoints.Open(filepath.Join(dir, optimFile))
	if err != nil {
		return err
	}
	defer ts.Close()
	b := t.Model.Backend
	load := func(from *checkpoints.Tensors, name string, x backend.Tensor, hint string) error {
		v, err := from.Float32(name, x.Shape()...)
		if err != nil {
			return fmt.Errorf("train: %s: %w%s", dir, err, hint)
		}
		return b.Write(x, v)
	}
	np := len(t.Model.Params)
	for i, p := range t.Model.Params {
		if err := load(ts, "m."+p.Name, t.slots[i].m, ""); err != nil {
			return err
		}
		if err := load(ts, "v."+p.Name, t.slots[i].v, ""); err != nil {
			return err
		}
	}
	for i, p := range t.extra {
		s := &t.slots[np+i]
		hint := " (the checkpoint was made without the objective's parameter " + p.Name + ")"
		for _, x := range []struct {
			name string
			t    backend.Tensor
		}{{"extra." + p.Name, p.W}, {"m.extra." + p.Name, s.m}, {"v.extra." + p.Name, s.v}} {
			if err := load(ts, x.name, x.t, hint); err != nil {
				return err
			}
		}
		if s.master != nil {
			if err := load(ts, "extra."+p.Name, s.master, hint); err != nil {
				return err
			}
		}
	}
	if t.hasMasters() {
		ws, err := checkpoints.Open(dir)
		if err != nil {
			return err
		}
		defer ws.Close()
		for i, p := range t.Model.Params {
			if s := &t.slots[i]; s.master != nil {
				if err := load(ws, p.Name, s.master, ""); err != nil {
					return err
				}
			}
		}
	}
	return t.setPosition(dir, st)
}

// setPosition moves the trainer and its data to a checkpoint's position.
func (t *Trainer) setPosition(dir string, st *State) error {
	if err := t.Data.SetCursor(st.Cursor); err != nil {
		return fmt.Errorf("train: %s: %w", dir, err)
	}
	t.Step, t.Tokens = st.Step, st.Tokens
	return nil
}

// hasMasters reports whether any model parameter has a master copy.
func (t *Trainer) hasMasters() bool {
	for _, s := range t.slots[:len(t.Model.Params)] {
		if s.master != nil {
			return true
		}
	}
	return false
}

// prune removes all but the newest keep checkpoints, and leftovers of
// checkpoint writes that were interrupted.
func prune(out string, keep int) error {
	dirs, err := Checkpoints(out)
	if err != nil {
		return err
	}
	for i := 0; i < len(dirs)-keep; i++ {
		if err := os.RemoveAll(dirs[i]); err != nil {
			return fmt.Errorf("train: %w", err)
		}
	}
	return nil
}
