package eval

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/model"
)

// Encoder is what scoring needs of a tokenizer.
type Encoder interface {
	Encode(text string) []int32
	BOS() int32
	EOS() int32
}

// ScoreOptions control log-likelihood scoring.
type ScoreOptions struct {
	// BOS prepends the tokenizer's BOS to every context (the harness's
	// add_bos_token; off by default, as there).
	BOS bool
	// MaxLen is the model's context: longer inputs lose tokens from the
	// left (the harness's max_length). 0: no limit.
	MaxLen int
	// BatchTokens bounds the token rows of one batch: its forward passes
	// and KV caches (default 8192).
	BatchTokens int
	// Plain scores one document per forward pass, its requests right-padded
	// side by side, without sharing their common prefix: the way scoring
	// worked before batching, kept as the benchmarks' anchor.
	Plain bool
	// Progress receives the requests scored so far and the total.
	Progress func(done, total int)
}

// DefaultBatchTokens is the default of ScoreOptions.BatchTokens.
const DefaultBatchTokens = 8192

// encodePair encodes a request as HFLM does (lm_eval/api/model.py
// _encode_pair and loglikelihood): trailing whitespace of the context moves
// to the continuation; context and context+continuation are encoded, and
// the continuation's tokens are those of the whole past the context's
// length. An empty context becomes the prefix token (BOS, else EOS).
// ctxCache memoizes context encodings.
func encodePair(tok Encoder, context, cont string, bos bool, ctxCache map[string][]int32) (ctxEnc, contEnc []int32, err error) {
	var pre []int32
	if bos {
		if tok.BOS() < 0 {
			return nil, nil, fmt.Errorf("the tokenizer has no BOS token; leave out --bos")
		}
		pre = []int32{tok.BOS()}
	}
	if context == "" {
		p := tok.BOS()
		if p < 0 {
			p = tok.EOS()
		}
		if p < 0 {
			return nil, nil, fmt.Errorf("an empty context needs a tokenizer with a BOS or EOS token")
		}
		contEnc = tok.Encode(cont)
		if len(contEnc) == 0 {
			return nil, nil, fmt.Errorf("the continuation %q encodes to no tokens", cont)
		}
		return []int32{p}, contEnc, nil
	}
	if trimmed := pyRStrip(context); len(trimmed) < len(context) {
		cont = context[len(trimmed):] + cont
		context = trimmed
	}
	ctxEnc, ok := ctxCache[context]
	if !ok {
		ctxEnc = append(slices.Clone(pre), tok.Encode(context)...)
		if ctxCache != nil {
			ctxCache[context] = ctxEnc
		}
	}
	whole := append(slices.Clone(pre), tok.Encode(context+cont)...)
	if len(whole) <= len(ctxEnc) {
		return nil, nil, fmt.Errorf("the continuation %q encodes to no tokens after its context", cont)
	}
	return ctxEnc, whole[len(ctxEnc):], nil
}

// item is one request ready for the model: its input (context and
// continuation without the last token, cut to MaxLen from the left) and
// the continuation's tokens, predicted by the input's last len(tg)
// positions.
type item struct {
	doc, req int
	in, tg   []int32
}

func (it *item) first() int { return len(it.in) - len(it.tg) } // first scored position

// group is items that share a prefix of p input tokens, computed once.
type group struct {
	items []*item
	p     int
	long  int // longest input
}

// Encode turns documents' requests into model inputs as the harness does
// (see encodePair), cutting inputs longer than maxLen from the left.
func encodeDocs(docs []Doc, tok Encoder, opt ScoreOptions, vocab int) ([]*group, error) {
	var groups []*group
	for d, doc := range docs {
		cache := map[string][]int32{}
		g := &group{}
		for r, rq := range doc.Requests {
			ctxEnc, contEnc, err := encodePair(tok, rq.Context, rq.Continuation, opt.BOS, cache)
			if err != nil {
				return nil, fmt.Errorf("eval: %s doc %d choice %d: %w", rq.Task, rq.Doc, rq.Choice, err)
			}
			if opt.MaxLen > 0 && len(contEnc) > opt.MaxLen {
				return nil, fmt.Errorf("eval: %s doc %d choice %d: the continuation's %d tokens exceed the model's context of %d", rq.Task, rq.Doc, rq.Choice, len(contEnc), opt.MaxLen)
			}
			full := append(slices.Clone(ctxEnc), contEnc...)
			if opt.MaxLen > 0 && len(full) > opt.MaxLen+1 {
				full = full[len(full)-(opt.MaxLen+1):]
			}
			for _, id := range full {
				if id < 0 || int(id) >= vocab {
					return nil, fmt.Errorf("eval: %s doc %d: token %d is outside the model's vocabulary of %d; use the model's own tokenizer", rq.Task, rq.Doc, id, vocab)
				}
			}
			g.items = append(g.items, &item{doc: d, req: r, in: full[:len(full)-1], tg: contEnc})
		}
		groups = append(groups, g.split(opt.Plain)...)
	}
	return groups, nil
}

// split sets the group's shared prefix: the longest common prefix of its
// inputs. A group whose inputs share nothing (left-truncated ones, say)
// becomes one group per item; in plain mode nothing is shared.
func (g *group) split(plain bool) []*group {
	if len(g.items) == 0 {
		return nil
	}
	p := len(g.items[0].in)
	for _, it := range g.items[1:] {
		n := 0
		for n < p && n < len(it.in) && it.in[n] == g.items[0].in[n] {
			n++
		}
		p = n
	}
	if p == 0 && !plain && len(g.items) > 1 {
		var out []*group
		for _, it := range g.items {
			out = append(out, (&group{items: []*item{it}}).split(plain)...)
		}
		return out
	}
	g.p = p
	if plain {
		g.p = 0
	}
	for _, it := range g.items {
		g.long = max(g.long, len(it.in))
	}
	return []*group{g}
}

// pair is one scored token: the row of the forward pass whose logits
// predict it, the token, and the item whose log-likelihood it adds to.
type pair struct {
	row, tg int32
	it      *item
}

// Score returns, for each document, each request's log-likelihood: the sum
// of log p(token) over the continuation's tokens given the context.
//
// Requests are encoded as the harness encodes them, grouped by document,
// and each document's common input prefix (the few-shot examples and the
// question, shared by every choice) is computed once: a batch of documents
// runs their prefixes through the model into a KV cache, which is copied
// into one cache slot per request, and then the requests' remaining tokens
// run together on top of it. Documents are sorted longest first and packed
// into batches of at most BatchTokens rows.
func Score(ctx context.Context, m *model.Model, tok Encoder, docs []Doc, opt ScoreOptions) ([][]float64, error) {
	if opt.BatchTokens <= 0 {
		opt.BatchTokens = DefaultBatchTokens
	}
	groups, err := encodeDocs(docs, tok, opt, m.Config.VocabSize)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(docs))
	total := 0
	for d, doc := range docs {
		out[d] = make([]float64, len(doc.Requests))
		total += len(doc.Requests)
	}
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].long > groups[j].long })
	done := 0
	for start := 0; start < len(groups); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := start + 1
		if !opt.Plain {
			for end < len(groups) && batchCost(groups[start:end+1]) <= opt.BatchTokens {
				end++
			}
		}
		batch := groups[start:end]
		if err := scoreBatch(m, batch, out); err != nil {
			return nil, err
		}
		start = end
		for _, g := range batch {
			done += len(g.items)
		}
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}
	return out, nil
}

// batchCost is the token rows a batch needs: the prefix pass (and its
// cache), and the remainders' pass with its cache of prefix and remainder.
func batchCost(gs []*group) int {
	maxP, maxR, n := 0, 0, 0
	for _, g := range gs {
		maxP = max(maxP, g.p)
		for _, it := range g.items {
			if r := len(it.in) - g.p; r > 0 {
				maxR = max(maxR, r)
				n++
			}
		}
	}
	return len(gs)*maxP + n*(maxP+maxR)
}

// scoreBatch runs a batch of groups: their prefixes side by side, then
// every item's remainder on a copy of its group's prefix cache.
func scoreBatch(m *model.Model, gs []*group, out [][]float64) error {
	maxP, maxR := 0, 0
	var rest []*item
	var restP []int
	var restG []int
	for gi, g := range gs {
		maxP = max(maxP, g.p)
		for _, it := range g.items {
			if r := len(it.in) - g.p; r > 0 {
				maxR = max(maxR, r)
				rest = append(rest, it)
				restP = append(restP, g.p)
				restG = append(restG, gi)
			}
		}
	}
	var cache *model.Cache
	defer func() {
		if cache != nil {
			cache.Free(m.Backend)
		}
	}()
	if maxP > 0 {
		// The prefixes: tokens predicted inside them are scored here.
		B, T := len(gs), maxP
		ids := make([]int32, B*T)
		var pairs []pair
		for b, g := range gs {
			copy(ids[b*T:], g.items[0].in[:g.p])
			for _, it := range g.items {
				for pos := it.first(); pos < g.p; pos++ {
					pairs = append(pairs, pair{row: int32(b*T + pos), tg: it.tg[pos-it.first()], it: it})
				}
			}
		}
		in := model.Input{B: B, T: T, IDs: ids}
		var opt model.Options
		if len(rest) > 0 {
			var err error
			if cache, err = m.NewCache(B, T); err != nil {
				return err
			}
			in.Past, opt.Cache = make([]int, B), cache
		}
		if err := forwardScore(m, in, opt, pairs, out); err != nil {
			return err
		}
	}
	if len(rest) == 0 {
		return nil
	}
	// The remainders, each on its own copy of its prefix's keys and values.
	N, T, maxT := len(rest), maxR, maxP+maxR
	var c2 *model.Cache
	if cache != nil {
		var err error
		if c2, err = m.NewCache(N, maxT); err != nil {
			return err
		}
		defer c2.Free(m.Backend)
		idx := make([]int32, N*maxT)
		for n := range rest {
			for j := range restP[n] {
				idx[n*maxT+j] = int32(restG[n]*cache.MaxT + j)
			}
		}
		rows, err := m.Backend.FromInt32(idx, len(idx))
		if err != nil {
			return err
		}
		defer m.Backend.Free(rows)
		for l := range cache.K {
			if err := m.Backend.GatherRows(c2.K[l], cache.K[l], rows); err != nil {
				return err
			}
			if err := m.Backend.GatherRows(c2.V[l], cache.V[l], rows); err != nil {
				return err
			}
		}
		cache.Free(m.Backend)
		cache = nil
	}
	ids := make([]int32, N*T)
	past := make([]int, N)
	var pairs []pair
	for n, it := range rest {
		p := restP[n]
		copy(ids[n*T:], it.in[p:])
		past[n] = p
		for pos := max(it.first(), p); pos < len(it.in); pos++ {
			pairs = append(pairs, pair{row: int32(n*T + pos - p), tg: it.tg[pos-it.first()], it: it})
		}
	}
	if maxP == 0 {
		// Nothing shared: one plain forward pass.
		return forwardScore(m, model.Input{B: N, T: T, IDs: ids}, model.Options{}, pairs, out)
	}
	return forwardScore(m, model.Input{B: N, T: T, IDs: ids, Past: past}, model.Options{Cache: c2}, pairs, out)
}

// forwardScore runs one forward pass and adds log p(target) at each pair's
// row to its item's log-likelihood. Logits exist only for the pairs' rows,
// a chunk at a time, and only one value per row returns to the host.
func forwardScore(m *model.Model, in model.Input, opt model.Options, pairs []pair, out [][]float64) error {
	b := m.Backend
	a, err := m.NewActivations(in.B*in.T, false)
	if err != nil {
		return err
	}
	defer a.Free(b)
	final, err := m.Hidden(a, in, opt)
	if err != nil {
		return err
	}
	if len(pairs) == 0 {
		return nil
	}
	rows := make([]int32, len(pairs))
	targets := make([]int32, len(pairs))
	for i, p := range pairs {
		rows[i], targets[i] = p.row, p.tg
	}
	rt, err := b.FromInt32(rows, len(rows))
	if err != nil {
		return err
	}
	defer b.Free(rt)
	sel, err := b.New(b.FloatDType(), len(rows), m.Config.HiddenSize)
	if err != nil {
		return err
	}
	defer b.Free(sel)
	if err := b.GatherRows(sel, final, rt); err != nil {
		return err
	}
	tt, err := b.FromInt32(targets, len(targets))
	if err != nil {
		return err
	}
	defer b.Free(tt)
	nll := make([]float32, 0, len(pairs))
	_, err = m.LogitsChunked(sel, func(r0, r1 int, logits, losses backend.Tensor, _ float32) error {
		tv, err := b.View(tt, r0, r1-r0)
		if err != nil {
			return err
		}
		if err := b.CrossEntropy(losses, nil, logits, tv, 0); err != nil {
			return err
		}
		v, err := b.ToFloat32(losses)
		if err != nil {
			return err
		}
		nll = append(nll, v...)
		return nil
	})
	if err != nil {
		return err
	}
	for i, p := range pairs {
		out[p.it.doc][p.it.req] -= float64(nll[i])
	}
	return nil
}
