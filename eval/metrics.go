package eval

import (
	"encoding/json"
	"math"
	"sort"
)

// Metric is a mean over documents and its standard error.
type Metric struct {
	Value  float64
	Stderr float64 // NaN when undefined (fewer than two documents)
}

// MarshalJSON writes NaN as null.
func (m Metric) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"value": m.Value, "stderr": finite(m.Stderr)})
}

func finite(x float64) any {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return x
}

// meanStderr is the mean of xs and the harness's mean_stderr: the sample
// standard deviation (n-1 in the denominator) over sqrt(n).
func meanStderr(xs []float64) Metric {
	n := float64(len(xs))
	if len(xs) == 0 {
		return Metric{Value: math.NaN(), Stderr: math.NaN()}
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mu := sum / n
	if len(xs) < 2 {
		return Metric{Value: mu, Stderr: math.NaN()}
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mu) * (x - mu)
	}
	return Metric{Value: mu, Stderr: math.Sqrt(ss/(n-1)) / math.Sqrt(n)}
}

// pooledStderr is the harness's pooled_sample_stderr, with which a group
// (MMLU over its subjects, weighted by size) aggregates its members'
// standard errors: sqrt(sum((n_i-1) se_i² n_i) / (sum n_i - k) / sum n_i).
func pooledStderr(ses []float64, sizes []int) float64 {
	var num float64
	total := 0
	for i, se := range ses {
		if sizes[i] > 1 {
			num += float64(sizes[i]-1) * se * se * float64(sizes[i])
		}
		total += sizes[i]
	}
	if total-len(sizes) <= 0 {
		return math.NaN()
	}
	return math.Sqrt(num / float64(total-len(sizes)) / float64(total))
}

// Subject is one MMLU subject's accuracy.
type Subject struct {
	Name string `json:"name"`
	Docs int    `json:"docs"`
	Acc  Metric `json:"acc"`
}

// TaskResult is a task's scores.
type TaskResult struct {
	Task  string `json:"task"`
	Shots int    `json:"num_fewshot"`
	Docs  int    `json:"docs"`
	// Acc is the fraction of documents whose right choice has the highest
	// log-likelihood; AccNorm (where the task reports it) divides each
	// choice's log-likelihood by its length in characters first. Ties go
	// to the first choice (numpy's argmax).
	Acc     Metric  `json:"acc"`
	AccNorm *Metric `json:"acc_norm,omitempty"`
	// Subjects are MMLU's; Acc is then the mean over all questions (the
	// harness's weight_by_size) with the pooled standard error.
	Subjects []Subject `json:"subjects,omitempty"`
	// PassAt is HumanEval's unbiased pass@k by k, with Samples per problem.
	PassAt  map[int]Metric `json:"pass_at,omitempty"`
	Samples int            `json:"samples,omitempty"`
	// Sandbox says which protections the HumanEval tests ran under.
	Sandbox string `json:"sandbox,omitempty"`
	// Seconds is how long the evaluation took (set by the caller).
	Seconds float64 `json:"seconds,omitempty"`
	// LogLik holds each document's choices' log-likelihoods.
	LogLik [][]float64 `json:"-"`
}

// Primary is the task's headline score: acc_norm where reported (as the
// papers do for HellaSwag and ARC), pass@1 for HumanEval, else acc.
func (r *TaskResult) Primary() Metric {
	switch {
	case r.PassAt != nil:
		return r.PassAt[1]
	case r.AccNorm != nil:
		return *r.AccNorm
	}
	return r.Acc
}

// accuracy scores documents from their choices' log-likelihoods.
func accuracy(t *Task, docs []Doc, ll [][]float64, shots int) *TaskResult {
	name := "multiple_choice"
	accNorm := true
	if t != nil {
		name, accNorm = t.Name, t.AccNorm
	}
	res := &TaskResult{Task: name, Shots: shots, Docs: len(docs), LogLik: ll}
	acc := make([]float64, len(docs))
	norm := make([]float64, len(docs))
	bySubject := map[string][]float64{}
	for i, d := range docs {
		best, bestNorm := 0, 0
		for c := range ll[i] {
			if ll[i][c] > ll[i][best] {
				best = c
			}
			if ll[i][c]/float64(d.ChoiceChars[c]) > ll[i][bestNorm]/float64(d.ChoiceChars[bestNorm]) {
				bestNorm = c
			}
		}
		if best == d.Gold {
			acc[i] = 1
		}
		if bestNorm == d.Gold {
			norm[i] = 1
		}
		if t != nil && t.FirstN {
			bySubject[d.Subject] = append(bySubject[d.Subject], acc[i])
		}
	}
	res.Acc = meanStderr(acc)
	if accNorm {
		m := meanStderr(norm)
		res.AccNorm = &m
	}
	if len(bySubject) > 0 {
		var names []string
		for s := range bySubject {
			names = append(names, s)
		}
		sort.Strings(names)
		var ses []float64
		var sizes []int
		for _, s := range names {
			m := meanStderr(bySubject[s])
			res.Subjects = append(res.Subjects, Subject{Name: s, Docs: len(bySubject[s]), Acc: m})
			ses = append(ses, m.Stderr)
			sizes = append(sizes, len(bySubject[s]))
		}
		res.Acc.Stderr = pooledStderr(ses, sizes)
	}
	return res
}
