package train

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/dist"
	"github.com/minitron/minitron/model"
)

// parallel is the engine of the ranks of a data-parallel run that this
// process drives: one trainer per GPU, each run by its goroutine of the
// group, and the process's data loaders, which draw the global batch in
// its one order and hand each rank its micro-batches (skipping those of
// other processes' ranks).
type parallel struct {
	cfg       *Config
	g         *dist.Group
	ts        []*Trainer
	first     int // global rank of ts[0]
	world     int
	data      *data.Loader
	val       *data.Loader
	resumeDir string
}

// startParallel loads the model on every GPU of the process (from the
// newest checkpoint when resuming, which every process must see alike),
// opens the data and makes the ranks' trainers.
func startParallel(cfg *Config, opt RunOptions) (*parallel, error) {
	reps, g := opt.Replicas, opt.Group
	if g == nil || g.Size() != len(reps) {
		return nil, fmt.Errorf("train: a data-parallel run needs a group of %d goroutines, one per GPU (this is a bug)", len(reps))
	}
	p := &parallel{cfg: cfg, g: g, ts: make([]*Trainer, len(reps)), first: reps[0].Comm.Rank(), world: reps[0].Comm.Size()}
	if p.writes() {
		diskio.CleanTemporary(opt.Out)
	}
	models := make([]*model.Model, len(reps))
	dirs := make([]string, len(reps))
	err := g.Do(func(i int) error {
		var err error
		models[i], dirs[i], err = StartModel(cfg, opt.Out, reps[i].Backend)
		if err != nil {
			return err
		}
		return agreeOnCheckpoint(reps[i].Comm, dirs[i], opt.Out)
	})
	if err != nil {
		freeModels(models)
		return nil, err
	}
	p.resumeDir = dirs[0]
	if p.data, p.val, err = OpenData(cfg, models[0].Config.VocabSize); err != nil {
		freeModels(models)
		return nil, err
	}
	err = g.Do(func(i int) error {
		obj := reps[i].Objective
		if obj == nil {
			obj = CrossEntropy{}
		}
		var err error
		p.ts[i], err = NewShardedTrainer(cfg, models[i], obj, p.data, reps[i].Comm)
		return err
	})
	if err != nil {
		for i, t := range p.ts {
			if t == nil {
				models[i].Free()
			}
		}
		p.free()
		return nil, err
	}
	return p, nil
}

func freeModels(ms []*model.Model) {
	for _, m := range ms {
		if m != nil {
			m.Free()
		}
	}
}

// agreeOnCheckpoint checks that every rank resumes from the same step:
// the run directory must be one every node sees.
func agreeOnCheckpoint(c dist.Comm, dir, out string) error {
	step := -1.0
	if dir != "" {
		st, err := readState(dir)
		if err != nil {
			return err
		}
		step = float64(st.Step)
	}
	v := []float64{0, 0}
	if c.Rank() == 0 {
		v[0] = step
	}
	if err := c.SumFloat64(v[:1]); err != nil {
		return err
	}
	if v[0] != step {
		v[1] = 1
	}
	lead := v[0]
	if err := c.SumFloat64(v[1:]); err != nil {
		return err
	}
	if v[1] > 0 {
		return fmt.Errorf("train: the ranks see different checkpoints in %s (rank 0 resumes from step %v, rank %d from step %v; -1 is none): with several nodes, --out must be a folder all of them share",
			out, lead, c.Rank(), step)
	}
	return nil
}

func (p *parallel) lead() *Trainer { return p.ts[0] }

func (p *parallel) writes() bool { return p.first == 0 }

func (p *parallel) resume(dir string, st *State) error {
	if err := p.data.SetCursor(st.Cursor); err != nil {
		return fmt.Errorf("train: %s: %w", dir, err)
	}
	return p.g.Do(func(i int) error {
		t := p.ts[i]
		if err := t.restoreSharded(dir); err != nil {
			return err
		}
		t.Step, t.Tokens = st.Step, st.Tokens
		return nil
	})
}

func (p *parallel) step() (StepStats, error) {
	cfg := p.cfg
	per := cfg.Train.Accumulation / p.world
	shares, err := drawShares(p.data, cfg.Train.Accumulation, cfg.Train.MicroBatch, p.first, len(p.ts), func(k int) int { return k / per })
	if err != nil {
		return StepStats{}, err
	}
	stats := make([]StepStats, len(p.ts))
	err = p.g.Do(func(i int) error {
		var err error
		stats[i], err = p.ts[i].shardedStep(shares[i])
		return err
	})
	return stats[0], err
}

// validate spreads the validation micro-batches over the ranks, batch j
// to rank j mod world.
func (p *parallel) validate(val *data.Loader, batches int) (float64, error) {
	shares, err := drawShares(val, batches, p.cfg.Train.MicroBatch, p.first, len(p.ts), func(j int) int { return j % p.world })
	if err != nil {
		return 0, err
	}
	out := make([]float64, len(p.ts))
	err = p.g.Do(func(i int) error {
		var err error
		out[i], err = p.ts[i].shardedEvaluate(shares[i], batches)
		return err
	})
	return out[0], err
}

func (p *parallel) stop(asked bool) (bool, error) {
	out := make([]float64, len(p.ts))
	err := p.g.Do(func(i int) error {
		v := []float64{0}
		if asked && i == 0 {
			v[0] = 1
		}
		err := p.ts[i].dp.comm.SumFloat64(v)
		out[i] = v[0]
		return err
	})
	return out[0] > 0, err
}

// checkpoint has every rank write its optimizer shard into a folder of
// the step, waits for all, then (rank 0's process) writes the
// checkpoint's other files and moves the shards in.
func (p *parallel) checkpoint(out string, cfgYAML []byte) (string, error) {
	t := p.lead()
	dir := filepath.Join(out, checkpointName(t.Step))
	shards := filepath.Join(out, "."+checkpointName(t.Step)+".tmp-shards")
	if err := os.MkdirAll(shards, 0o755); err != nil {
		return "", fmt.Errorf("train: %w", err)
	}
	err := p.g.Do(func(i int) error {
		if err := p.ts[i].saveShard(shards); err != nil {
			return err
		}
		return p.ts[i].dp.comm.SumFloat64([]float64{0}) // every shard is written
	})
	if err != nil || !p.writes() {
		return dir, err
	}
	defer os.RemoveAll(shards)
	return t.save(out, cfgYAML, shards)
}

func (p *parallel) free() {
	for _, t := range p.ts {
		if t != nil {
			t.Free()
		}
	}
}
