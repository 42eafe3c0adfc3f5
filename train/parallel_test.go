package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/dist"
)

// Data-parallel runs on CPU backends joined by the in-process
// communicator, which adds the ranks' values in rank order as the
// stand-in NCCL does. (The same runs on emulated GPUs with NCCL are
// tested in cmd/minitron.)

// runRanks runs the ranks of a data-parallel run as processes of the
// given number of GPUs each (one goroutine per process, each with its own
// data loaders, as separate processes have), and returns rank 0's result.
// interrupts, when not nil, are the processes' interrupt channels.
func runRanks(t *testing.T, c *Config, out string, procs []int, interrupts []chan struct{}) (*Result, error) {
	t.Helper()
	var res *Result
	errs := dist.LocalJob(procs, func() backend.Backend { return cpu.New() }, func(p int, g *dist.Group, bs []backend.Backend, cs []dist.Comm) error {
		opt := RunOptions{Out: out, Replicas: Replicas(bs, cs), Group: g, Log: testLog{t}}
		if interrupts != nil {
			opt.Interrupt = interrupts[p]
		}
		r, err := Run(context.Background(), c, opt)
		if p == 0 {
			res = r
		}
		return err
	})
	return res, errors.Join(errs...)
}

// closeAt closes stop once the run in out has logged step.
func closeAt(out string, step int, stop chan struct{}) {
	for {
		if ms, _ := ReadMetrics(out); len(ms) > 0 && ms[len(ms)-1].Step >= step {
			close(stop)
			return
		}
		runtime.Gosched()
	}
}

// near compares two runs' metrics, which differ only in the rounding of
// the order gradients are added in.
func near(t *testing.T, what string, a, b []Metric, tol float64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d metric lines vs %d", what, len(a), len(b))
	}
	worst := 0.0
	for i := range a {
		x, y := a[i], b[i]
		if x.Step != y.Step || x.Tokens != y.Tokens || (x.Loss == nil) != (y.Loss == nil) || (x.ValCE == nil) != (y.ValCE == nil) {
			t.Fatalf("%s: metric line %d: %+v vs %+v", what, i, x, y)
		}
		for _, p := range [][2]*float64{{x.Loss, y.Loss}, {x.ValCE, y.ValCE}, {x.GradNorm, y.GradNorm}} {
			if p[0] != nil {
				worst = max(worst, math.Abs(*p[0]-*p[1])/math.Abs(*p[1]))
			}
		}
	}
	if worst > tol {
		t.Fatalf("%s: relative difference %.3g > %.3g", what, worst, tol)
	}
	t.Logf("%s: largest relative difference %.3g", what, worst)
}

// TestDataParallelSameTrajectory: the same global batch on 1, 2 and 4
// ranks (and on two processes of two ranks each) gives the same losses
// and gradient norms up to the rounding of the reduction order, and the
// same data: the loaders skip exactly what the other processes read.
func TestDataParallelSameTrajectory(t *testing.T) {
	c := tinyRun(t, 6)
	c.Train.MicroBatch, c.Train.Accumulation = 2, 4
	one := t.TempDir()
	if _, err := runTo(t, c, one, nil); err != nil {
		t.Fatal(err)
	}
	ref := deterministic(t, one)
	for _, procs := range [][]int{{2}, {4}, {2, 2}, {1, 3}} {
		out := t.TempDir()
		res, err := runRanks(t, c, out, procs, nil)
		if err != nil {
			t.Fatalf("%v: %v", procs, err)
		}
		near(t, fmt.Sprintf("GPUs per process %v", procs), ref, deterministic(t, out), 2e-5)
		if res.FinalDir == "" {
			t.Fatal("rank 0 exported no model")
		}
	}
	// accumulation must divide among the GPUs.
	_, err := runRanks(t, c, t.TempDir(), []int{3}, nil)
	if err == nil || !strings.Contains(err.Error(), "train.accumulation 4 does not divide among 3 GPUs") {
		t.Fatalf("3 GPUs for accumulation 4: %v", err)
	}
}

// TestDataParallelResume: a data-parallel run stopped and resumed on the
// same ranks is bit-identical to an uninterrupted one (optimizer shards
// included); resumed on another number of ranks, or on one device, it
// continues from the same step and data position.
func TestDataParallelResume(t *testing.T) {
	c := tinyRun(t, 9)
	c.Train.MicroBatch, c.Train.Accumulation = 2, 4
	ref := t.TempDir()
	if _, err := runRanks(t, c, ref, []int{2}, nil); err != nil {
		t.Fatal(err)
	}
	last := filepath.Join(ref, "checkpoint-0000009")
	for _, f := range []string{"optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors", "model.safetensors", stateFile} {
		if _, err := os.Stat(filepath.Join(last, f)); err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(last, optimFile)); err == nil {
		t.Fatalf("a data-parallel checkpoint has %s", optimFile)
	}
	// Stopped at step 4 by the second process (rank 1) only, resumed on
	// the same two ranks as two processes.
	out := t.TempDir()
	stops := []chan struct{}{make(chan struct{}), make(chan struct{})}
	go closeAt(out, 4, stops[1])
	if _, err := runRanks(t, c, out, []int{1, 1}, stops); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupt: %v", err)
	}
	res, err := runRanks(t, c, out, []int{1, 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedFrom < 4 || res.ResumedFrom > 6 {
		t.Fatalf("resumed from %d", res.ResumedFrom)
	}
	for _, f := range []string{"optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors", "model.safetensors"} {
		sameFile(t, filepath.Join(last, f), filepath.Join(out, "checkpoint-0000009", f))
	}
	sameMetrics(t, deterministic(t, ref), deterministic(t, out))

	// From the 2-rank checkpoint of step 6, on 4 ranks and on one device.
	for _, procs := range [][]int{{4}, nil} {
		dir := t.TempDir()
		if err := copyDir(filepath.Join(ref, "checkpoint-0000006"), filepath.Join(dir, "checkpoint-0000006")); err != nil {
			t.Fatal(err)
		}
		var res *Result
		var err error
		if procs == nil {
			res, err = runTo(t, c, dir, nil)
		} else {
			res, err = runRanks(t, c, dir, procs, nil)
		}
		if err != nil {
			t.Fatalf("%v: %v", procs, err)
		}
		if res.ResumedFrom != 6 {
			t.Fatalf("%v: resumed from %d", procs, res.ResumedFrom)
		}
		a, b := deterministic(t, ref), deterministic(t, dir)
		near(t, "resumed on other ranks", a[len(a)-len(b):], b, 2e-5)
		st, _ := readState(filepath.Join(dir, "checkpoint-0000009"))
		want, _ := readState(last)
		if !reflect.DeepEqual(st.Cursor, want.Cursor) || st.Tokens != want.Tokens {
			t.Fatalf("%v: data position %+v, want %+v", procs, st.Cursor, want.Cursor)
		}
	}
	// A one-device checkpoint resumes on 2 ranks.
	single := t.TempDir()
	stop := make(chan struct{})
	go closeAt(single, 6, stop)
	if _, err := runTo(t, c, single, stop); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupt: %v", err)
	}
	if _, err := runRanks(t, c, single, []int{2}, nil); err != nil {
		t.Fatal(err)
	}
	a, b := deterministic(t, ref), deterministic(t, single)
	near(t, "one device, then 2 ranks", a, b, 2e-5)
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// TestResumeOnOtherGPUs: a run resumes with other GPU numbers in its
// device setting (cuda, cuda:0,1, cuda:3), not on another kind of device.
func TestResumeOnOtherGPUs(t *testing.T) {
	saved := tinyRun(t, 2)
	saved.Device = "cuda"
	dir := t.TempDir()
	y, err := saved.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "training.yaml"), y, 0o644); err != nil {
		t.Fatal(err)
	}
	st := &State{Fingerprint: saved.fingerprint()}
	for _, tc := range []struct {
		device string
		ok     bool
	}{{"cuda", true}, {"cuda:0,1", true}, {"cuda:3", true}, {"gpu", true}, {"cpu", false}} {
		t.Run(tc.device, func(t *testing.T) {
			c := *saved
			c.Device = tc.device
			y, err := c.YAML()
			if err != nil {
				t.Fatal(err)
			}
			err = checkResume(&c, RunOptions{Out: dir}, st, dir, y, nil)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "device: cuda (the run's) → cpu (now)")) {
				t.Fatalf("accepted or unclear: %v", err)
			}
		})
	}
}
