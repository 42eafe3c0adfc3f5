package cuda

import (
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cuda/emu"
)

// Tests of the NCCL binding on the stand-in NCCL (backend/cuda/emu), whose
// ranks meet in shared memory: threads of one process driving several
// emulated GPUs, or processes. Each case runs in a subprocess (the
// libraries are loaded once per process, from LD_LIBRARY_PATH).

// TestEmuNCCL runs the cases of ncclHelpers on the stand-ins.
func TestEmuNCCL(t *testing.T) {
	dir := emu.Dir(t)
	for _, c := range []struct {
		name   string
		gpus   int
		stderr []string
	}{
		{"collectives", 3, nil},
		{"mismatch", 2, []string{"ncclAllReduce: rank ", "called AllReduce (sum) of 10 float32 while rank ", "called AllReduce (sum) of 12 float32"}},
		{"abort", 2, []string{"the communicator was aborted"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := ncclHelper(dir, c.name, fmt.Sprintf("MINITRON_EMU_GPUS=%d", c.gpus)).CombinedOutput()
			if err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			for _, s := range c.stderr {
				if !strings.Contains(string(out), s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
		})
	}
	// Two processes of one GPU each get what three threads of one
	// process get, and a rank whose process dies makes the other's
	// collective fail instead of waiting.
	t.Run("processes", func(t *testing.T) { ncclProcesses(t, dir, "processes", false) })
	t.Run("peer-exits", func(t *testing.T) { ncclProcesses(t, dir, "peer-exits", true) })
}

// ncclHelper runs a case of ncclHelpers through TestEmuHelper.
func ncclHelper(dir, name string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmuHelper$", "-test.v", "-test.count=1")
	cmd.Env = emu.Env(dir, append(env, "MINITRON_EMU_HELPER=nccl-"+name, "MINITRON_EMU_NCCL_TIMEOUT=60")...)
	return cmd
}

func init() {
	for name, f := range ncclHelpers {
		emuHelpers["nccl-"+name] = f
	}
}

// ncclProcesses runs two ranks as two processes of one emulated GPU each;
// rank 0 makes the unique id and hands it over through a file.
func ncclProcesses(t *testing.T, dir, name string, peerExits bool) {
	idFile := filepath.Join(t.TempDir(), "id")
	outs := make([][]byte, 2)
	errs := each(2, func(r int) error {
		var err error
		outs[r], err = ncclHelper(dir, name, "MINITRON_EMU_GPUS=1", "MINITRON_NCCL_RANK="+strconv.Itoa(r), "MINITRON_NCCL_ID_FILE="+idFile).CombinedOutput()
		return err
	})
	for r := range 2 {
		if errs[r] != nil && !(peerExits && r == 1) {
			t.Errorf("rank %d: %v:\n%s", r, errs[r], outs[r])
		}
	}
	if peerExits && !strings.Contains(string(outs[0]), "the process of rank 1 (pid ") {
		t.Errorf("rank 0 does not name the rank that exited:\n%s", outs[0])
	}
}

// ranks opens one backend per emulated GPU and joins them in one
// communicator, each from a goroutine of its own.
func ranks(t *testing.T, n int) ([]*Backend, []*Comm) {
	t.Helper()
	id, err := NewUniqueID()
	if err != nil {
		t.Fatal(err)
	}
	bs := make([]*Backend, n)
	cs := make([]*Comm, n)
	for r := range n {
		if bs[r], err = Open(Options{Device: r}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bs[r].Close() })
	}
	parallel(t, n, func(r int) error {
		var err error
		cs[r], err = bs[r].NewComm(id, r, n)
		return err
	})
	for _, c := range cs {
		t.Cleanup(func() { c.Close() })
	}
	return bs, cs
}

// each runs f for every rank, each on a goroutine locked to its thread,
// and returns their errors.
func each(n int, f func(r int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			errs[r] = f(r)
		}()
	}
	wg.Wait()
	return errs
}

// parallel is each, failing the test with the errors.
func parallel(t *testing.T, n int, f func(r int) error) {
	t.Helper()
	for r, err := range each(n, f) {
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// input is rank r's value i: fractions whose float32 sums round, so the
// order of the reduction shows.
func input(r, i int) float32 { return float32(i%97)*0.1 + float32(r)*0.37 + float32(i%5)*1e-3 }

// bf16Input is exactly representable in bfloat16, with sums that are too.
func bf16Input(r, i int) float32 { return float32(i%23-11) + float32(r)*0.5 }

// sumInOrder is what the stand-in promises: the ranks' values added in
// rank order in float32.
func sumInOrder(n, i int, in func(r, i int) float32) float32 {
	s := in(0, i)
	for r := 1; r < n; r++ {
		s += in(r, i)
	}
	return s
}

// checkCollectives runs every collective as rank r of n and checks the
// results exactly against sums in rank order.
func checkCollectives(b *Backend, c *Comm) error {
	r, n := c.Rank(), c.Size()
	f32 := func(count int, in func(r, i int) float32) (backend.Tensor, error) {
		t, err := b.New(backend.F32, count)
		if err != nil {
			return nil, err
		}
		v := make([]float32, count)
		for i := range v {
			v[i] = in(r, i)
		}
		return t, b.Write(t, v)
	}
	expect := func(name string, t backend.Tensor, want func(i int) float32) error {
		got, err := b.ToFloat32(t)
		if err != nil {
			return err
		}
		for i, g := range got {
			if w := want(i); g != w && !(math.IsNaN(float64(g)) && math.IsNaN(float64(w))) {
				return fmt.Errorf("%s: element %d is %v, want %v", name, i, g, w)
			}
		}
		return nil
	}
	// AllReduce in float32, of more than a staging slot of the stand-in,
	// and in bfloat16.
	bf16 := func(count int, in func(r, i int) float32) (backend.Tensor, error) {
		v := make([]float32, count)
		for i := range v {
			v[i] = in(r, i)
		}
		return b.FromFloat32(v, count)
	}
	for _, c2 := range []struct {
		name  string
		count int
		make  func(int, func(r, i int) float32) (backend.Tensor, error)
		in    func(r, i int) float32
	}{{"AllReduce float32", 1<<20 + 77, f32, input}, {"AllReduce bfloat16", 1000, bf16, bf16Input}} {
		t, err := c2.make(c2.count, c2.in)
		if err != nil {
			return err
		}
		if err := c.AllReduce(t); err != nil {
			return err
		}
		if err := expect(c2.name, t, func(i int) float32 { return sumInOrder(n, i, c2.in) }); err != nil {
			return err
		}
	}
	// ReduceScatter in place (dst is this rank's part of src), with a
	// part larger than a slot holds for all ranks.
	const part = 300_001
	src, err := f32(part*n, input)
	if err != nil {
		return err
	}
	dst, err := b.View(src, r*part, part)
	if err != nil {
		return err
	}
	if err := c.ReduceScatter(dst, src); err != nil {
		return err
	}
	if err := expect("ReduceScatter", dst, func(i int) float32 { return sumInOrder(n, r*part+i, input) }); err != nil {
		return err
	}
	// AllGather in place: each rank's part is its own values.
	all, err := b.New(backend.F32, part*n)
	if err != nil {
		return err
	}
	mine, err := b.View(all, r*part, part)
	if err != nil {
		return err
	}
	v := make([]float32, part)
	for i := range v {
		v[i] = input(r, i)
	}
	if err := b.Write(mine, v); err != nil {
		return err
	}
	if err := c.AllGather(all, mine); err != nil {
		return err
	}
	if err := expect("AllGather", all, func(i int) float32 { return input(i/part, i%part) }); err != nil {
		return err
	}
	// Broadcast from the last rank.
	bc, err := f32(5000, input)
	if err != nil {
		return err
	}
	if err := c.Broadcast(bc, n-1); err != nil {
		return err
	}
	if err := expect("Broadcast", bc, func(i int) float32 { return input(n-1, i) }); err != nil {
		return err
	}
	// Scalars in float64.
	s := []float64{float64(r) + 0.5, 1e-300, -float64(r * r)}
	if err := c.SumFloat64(s); err != nil {
		return err
	}
	want := []float64{0, 0, 0}
	for k := range n {
		want[0] += float64(k) + 0.5
		want[1] += 1e-300
		want[2] -= float64(k * k)
	}
	if s[0] != want[0] || s[1] != want[1] || s[2] != want[2] {
		return fmt.Errorf("SumFloat64: %v, want %v", s, want)
	}
	// Shape and dtype errors are the caller's, found before NCCL is called.
	if err := c.ReduceScatter(dst, bc); err == nil || !strings.Contains(err.Error(), "elements, want") {
		return fmt.Errorf("ReduceScatter from a source of the wrong size: %v", err)
	}
	return nil
}

// processRank joins rank MINITRON_NCCL_RANK of a two-process communicator
// whose id rank 0 writes to MINITRON_NCCL_ID_FILE.
func processRank(t *testing.T) (*Backend, *Comm) {
	r, _ := strconv.Atoi(os.Getenv("MINITRON_NCCL_RANK"))
	file := os.Getenv("MINITRON_NCCL_ID_FILE")
	var id UniqueID
	if r == 0 {
		var err error
		if id, err = NewUniqueID(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file+".tmp", []byte(hex.EncodeToString(id[:])), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Rename(file+".tmp", file)
	} else {
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			b, err := os.ReadFile(file)
			if err == nil {
				hex.Decode(id[:], b)
				break
			}
			if time.Since(start) > time.Minute {
				t.Fatal("rank 0 wrote no id")
			}
		}
	}
	b, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.NewComm(id, r, 2)
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

var ncclHelpers = map[string]func(t *testing.T){
	"collectives": func(t *testing.T) {
		if v, err := NCCLVersion(); err != nil || v != "2.21.5" {
			t.Fatalf("version %q, %v", v, err)
		}
		bs, cs := ranks(t, 3)
		parallel(t, 3, func(r int) error { return checkCollectives(bs[r], cs[r]) })
	},
	"processes": func(t *testing.T) {
		b, c := processRank(t)
		if err := checkCollectives(b, c); err != nil {
			t.Fatalf("rank %d: %v", c.Rank(), err)
		}
		c.Close()
	},
	"peer-exits": func(t *testing.T) {
		b, c := processRank(t)
		if c.Rank() == 1 {
			os.Exit(3)
		}
		start := time.Now()
		err := c.SumFloat64([]float64{1})
		if err == nil || !strings.Contains(err.Error(), "ncclRemoteError") {
			t.Fatalf("rank 0: %v, want ncclRemoteError", err)
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the failure took %v", time.Since(start))
		}
		b.Close()
	},
	"mismatch": func(t *testing.T) {
		bs, cs := ranks(t, 2)
		errs := each(2, func(r int) error {
			x, err := bs[r].New(backend.F32, 10+2*r)
			if err == nil {
				err = cs[r].AllReduce(x)
			}
			return err
		})
		for r, err := range errs {
			if err == nil || !strings.Contains(err.Error(), "ncclInvalidUsage") || !strings.Contains(err.Error(), "the same collectives in the same order") {
				t.Errorf("rank %d: %v, want ncclInvalidUsage", r, err)
			}
		}
	},
	"abort": func(t *testing.T) {
		bs, cs := ranks(t, 2)
		done := make(chan error)
		go func() {
			x, err := bs[0].New(backend.F32, 4)
			if err == nil {
				err = cs[0].AllReduce(x) // rank 1 never comes
			}
			done <- err
		}()
		time.Sleep(200 * time.Millisecond)
		for _, c := range cs {
			c.Abort()
		}
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "ncclRemoteError") {
				t.Fatalf("rank 0: %v, want ncclRemoteError", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the aborted collective did not return")
		}
		// The aborted communicator refuses further work.
		if err := cs[1].SumFloat64([]float64{1}); err == nil || !strings.Contains(err.Error(), "aborted") {
			t.Fatalf("after Abort: %v", err)
		}
	},
}
