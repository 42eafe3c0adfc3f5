package generate

import (
	"math"
	"slices"
)

// Logprob is the natural-log probability of a token under the model's
// distribution (the softmax of the raw logits, before temperature, top-k or
// top-p), with the most likely tokens at that position.
type Logprob struct {
	Token   int32
	Logprob float32
	Top     []TokenProb // most likely first; ties by lower id
}

// TokenProb is one alternative token and its log-probability.
type TokenProb struct {
	Token   int32
	Logprob float32
}

// TokenLogprob returns tok's log-probability under logits and the top most
// likely tokens.
func TokenLogprob(logits []float32, tok int32, top int) Logprob {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	lp := Logprob{Token: tok, Logprob: float32(float64(logits[tok]) - lse)}
	if top > 0 {
		cs := topK(make([]cand, 0, top), logits, min(top, len(logits)))
		slices.SortFunc(cs, func(a, b cand) int {
			if better(a, b) {
				return -1
			}
			return 1
		})
		lp.Top = make([]TokenProb, len(cs))
		for i, c := range cs {
			lp.Top[i] = TokenProb{Token: c.id, Logprob: float32(c.p - lse)}
		}
	}
	return lp
}
