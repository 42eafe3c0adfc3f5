package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/minitron/minitron/train"
)

// TestMain lets the test binary act as the minitron command when
// MINITRON_RUN_MAIN is set, so tests run the real CLI in a subprocess (and
// can measure its memory).
func TestMain(m *testing.M) {
	if os.Getenv("MINITRON_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	if h := os.Getenv("MINITRON_TEST_HELPER"); h != "" {
		if err := helpers[h](os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const fixtures = "../../testdata/hf"

type result struct {
	stdout, stderr string
	code           int
	maxRSS         int64 // bytes
}

// helpers are test steps run in a subprocess, to keep their memory out of
// the parent (a child's peak RSS includes its parent's at fork time).
var helpers = map[string]func(args []string) error{}

// runHelper runs a helper in a subprocess.
func runHelper(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MINITRON_TEST_HELPER="+name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper %s: %v\n%s", name, err, out)
	}
}

// run executes minitron with args.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runEnv(t, os.Environ(), stdin, args...)
}

// runEnv executes minitron with args in the environment env.
func runEnv(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(env, "MINITRON_RUN_MAIN=1")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	r.maxRSS = maxRSS(cmd.ProcessState)
	return r
}

func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, "", args...)
	if r.code != 0 {
		t.Fatalf("minitron %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

func TestHelp(t *testing.T) {
	r := mustRun(t, "--help")
	for _, c := range []string{"inspect", "logits", "sample", "bench", "tokenize"} {
		if !strings.Contains(r.stdout, c) {
			t.Errorf("--help does not list %s", c)
		}
	}
	// Every command, at every level, has a summary and a description;
	// every flag a description and a value name a user can read.
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if strings.TrimSpace(c.Short) == "" || strings.TrimSpace(c.Long) == "" {
			t.Errorf("%s: no Short or Long help", c.CommandPath())
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%s --%s has no help text", c.CommandPath(), f.Name)
			}
			if name, _ := pflag.UnquoteUsage(f); strings.Contains(name, "Slice") || strings.Contains(name, "Array") {
				t.Errorf("%s --%s shows the Go type %s", c.CommandPath(), f.Name, name)
			}
		})
		for _, sub := range c.Commands() {
			if sub.Name() != "help" && sub.Name() != "completion" {
				walk(sub)
			}
		}
	}
	walk(newRoot())
	// A group of commands refuses an unknown one, with a suggestion.
	r = run(t, "", "bench", "forwrd")
	if r.code == 0 || !strings.Contains(r.stderr, "did you mean forward?") {
		t.Errorf("bench forwrd: exit %d, %q", r.code, r.stderr)
	}
}

func TestInspect(t *testing.T) {
	r := mustRun(t, "inspect", filepath.Join(fixtures, "nemotron-odd-bf16"))
	for _, want := range []string{"NemotronForCausalLM", "layers 3, hidden 80, heads 6 (KV 2, head_dim 16), MLP 200, vocab 300", "BF16", "to run", "to train"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	trunc := filepath.Join(dir, "trunc.safetensors")
	b, _ := os.ReadFile(filepath.Join(fixtures, "nemotron-tiny", "golden.safetensors"))
	os.WriteFile(trunc, b[:100], 0o644)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing model", []string{"inspect", filepath.Join(dir, "nope")}, "no such file"},
		{"truncated input", []string{"logits", "--model", filepath.Join(fixtures, "nemotron-tiny"), "--input", trunc, "--output", filepath.Join(dir, "o.safetensors")}, "trunc.safetensors"},
		{"no input_ids", []string{"logits", "--model", filepath.Join(fixtures, "nemotron-tiny"), "--input", filepath.Join(fixtures, "nemotron-tiny", "model.safetensors"), "--output", filepath.Join(dir, "o.safetensors")}, `"input_ids"`},
		{"id beyond vocab", []string{"sample", "--model", filepath.Join(fixtures, "nemotron-tiny"), "--prompt-ids", "1,512", "--max-new-tokens", "2"}, "outside the vocabulary"},
		{"bad device", []string{"bench", "matmul", "--device", "tpu"}, "unknown --device"},
		{"cuda unavailable", []string{"bench", "matmul", "--device", "cuda"}, "cuda"},
		{"bad temperature", []string{"sample", "--model", filepath.Join(fixtures, "nemotron-tiny"), "--prompt-ids", "1", "--temperature", "-1"}, "temperature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, "", c.args...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q: want a failure mentioning %q", r.code, r.stderr, c.want)
			}
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
				t.Fatalf("panicked: %s", r.stderr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "o.safetensors")); err == nil {
		t.Fatal("a failed run left an output file")
	}
}

// TestSignals: the first signal cancels the command's context, the second
// aborts.
func TestSignals(t *testing.T) {
	sig := make(chan os.Signal, 2)
	ctx, cancel := context.WithCancel(context.Background())
	aborted := make(chan struct{})
	go onSignals(sig, cancel, func() { close(aborted) })
	sig <- os.Interrupt
	<-ctx.Done()
	select {
	case <-aborted:
		t.Fatal("aborted at the first signal")
	default:
	}
	sig <- os.Interrupt
	<-aborted
}

// checkReadable fails when a file or directory under dir is less readable
// than the umask allows (0644 files, 0755 directories under umask 022):
// outputs are for other users and tools too.
func checkReadable(t *testing.T, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := os.FileMode(0o644) &^ umask()
		if d.IsDir() {
			want = 0o755 &^ umask()
		}
		if got := info.Mode().Perm(); got&want != want {
			t.Errorf("%s: mode %v, want at least %v", p, got, want)
		}
		n++
		return nil
	})
	if err != nil || n < 2 {
		t.Fatalf("walking %s: %d entries, %v", dir, n, err)
	}
}

// TestVersionAndNoRecipe: --version names the Go version and the cgo
// setting; run without a recipe shows its usage and the shipped recipes.
func TestVersionAndNoRecipe(t *testing.T) {
	r := mustRun(t, "--version")
	if !strings.HasPrefix(r.stdout, "minitron ") || !strings.Contains(r.stdout, runtime.Version()) || !strings.Contains(r.stdout, "CGO_ENABLED=") ||
		!strings.Contains(r.stdout, "commit ") {
		t.Errorf("--version: %q", r.stdout)
	}
	r = run(t, "", "run")
	for _, want := range []string{"run needs a recipe file", "Usage:", "minitron run RECIPE.yaml", "tiny.yaml", "minitron-4b.yaml", "the default recipe"} {
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("run without a recipe: exit %d, stderr lacks %q:\n%s", r.code, want, r.stderr)
		}
	}
}

// TestProgressLine: one name per quantity; a validation shows no
// throughput of its own.
func TestProgressLine(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	var p progress
	for _, c := range []struct {
		m    train.Metric
		want string
	}{
		{train.Metric{Step: 1, Loss: f(0.25), TokPerS: 800, Extra: map[string]float64{"kl": 0.25}}, "kl 0.2500 | 800 tok/s"},
		{train.Metric{Step: 1, ValCE: f(2.0306)}, "kl 0.2500 | val ce 2.0306 | 800 tok/s"},
		{train.Metric{Step: 2, Loss: f(0.3), TokPerS: 810, Extra: map[string]float64{"kl": 0.2, "train_ce": 1}}, "loss 0.3000 (kl 0.2000) | val ce 2.0306 | 810 tok/s"},
	} {
		if got := p.update(c.m); got != c.want {
			t.Errorf("%+v: %q, want %q", c.m, got, c.want)
		}
	}
	var q progress
	if got := q.update(train.Metric{Step: 1, Loss: f(1.9), TokPerS: 5}); got != "loss 1.9000 | 5 tok/s" {
		t.Errorf("training: %q", got)
	}
}

// TestGCPercent: the collector runs at gcPercent unless GOGC is set.
func TestGCPercent(t *testing.T) {
	saved := debug.SetGCPercent(100)
	defer debug.SetGCPercent(saved)
	for _, c := range []struct {
		gogc string
		want int
	}{{"", gcPercent}, {"100", 100}, {"off", 100}} {
		debug.SetGCPercent(100)
		setGC(func(k string) string {
			if k == "GOGC" {
				return c.gogc
			}
			return ""
		})
		if got := debug.SetGCPercent(100); got != c.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", c.gogc, got, c.want)
		}
	}
}
