package generate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/minitron/minitron/model"
)

// Engine serves many generation requests at once on one model by continuous
// batching: every step decodes one token for every running request in a
// single forward pass, and requests join (after their prompt is prefilled)
// or leave (when done or cancelled) between steps. Each request owns a KV
// cache slot and its own seeded sampler, so its output does not depend on
// what it shares the batch with.
type Engine struct {
	m      *model.Model
	cache  *model.Cache
	maxT   int
	submit chan *job
	done   chan struct{}

	mu      sync.Mutex
	running int // admitted or queued jobs

	// promptChunk is how many prompt positions scorePrompt runs at once;
	// 0 sizes the chunk from the vocabulary.
	promptChunk int
}

// Request is one generation.
type Request struct {
	Prompt  []int32
	Options Options // OnToken is ignored; tokens arrive as Events
	// Seq selects the sampler's random stream (choice j of a request with
	// several uses j), as Generate's sequence number does.
	Seq uint64
	// Logprobs attaches each new token's log-probability, and TopLogprobs
	// alternatives, to its event (also to the stop token that ends it).
	Logprobs    bool
	TopLogprobs int
	// PromptLogprobs sends the log-probability of every prompt token after
	// the first, given the tokens before it, as the first event.
	PromptLogprobs bool
}

// Event is one step of a request: prompt log-probabilities (Prompt set,
// first), a token, or the end (Finish set, or Err when the request failed or
// was cancelled). An end by a stop token carries that token in Token (not
// part of the output) with its Logprob.
type Event struct {
	Token   int32
	Logprob *Logprob
	Prompt  []Logprob
	Finish  string
	Err     error
}

type job struct {
	ctx     context.Context
	req     Request
	events  chan Event
	slot    int
	past    int
	next    int32
	count   int
	sampler *Sampler
}

// NewEngine makes an engine with slots concurrent sequences of up to maxT
// positions (prompt and generated tokens together).
func NewEngine(m *model.Model, slots, maxT int) (*Engine, error) {
	if slots < 1 || maxT < 2 {
		return nil, fmt.Errorf("generate: engine needs at least one slot and two positions")
	}
	c, err := m.NewCache(slots, maxT)
	if err != nil {
		return nil, err
	}
	return &Engine{m: m, cache: c, maxT: maxT, submit: make(chan *job, 4*slots), done: make(chan struct{})}, nil
}

// MaxT is the context length of a slot.
func (e *Engine) MaxT() int { return e.maxT }

// Check validates a request without running it.
func (e *Engine) Check(r Request) error {
	if err := r.Options.Validate(); err != nil {
		return err
	}
	if len(r.Prompt) == 0 {
		return errors.New("generate: the prompt is empty")
	}
	if r.TopLogprobs < 0 || r.TopLogprobs > e.m.Config.VocabSize {
		return fmt.Errorf("generate: %d top log-probabilities asked; the vocabulary has %d tokens", r.TopLogprobs, e.m.Config.VocabSize)
	}
	for _, id := range r.Prompt {
		if id < 0 || int(id) >= e.m.Config.VocabSize {
			return fmt.Errorf("generate: token id %d is outside the vocabulary (size %d)", id, e.m.Config.VocabSize)
		}
	}
	if n := len(r.Prompt) + r.Options.MaxNewTokens; n > e.maxT {
		return fmt.Errorf("generate: the prompt's %d tokens plus %d new ones exceed the context of %d", len(r.Prompt), r.Options.MaxNewTokens, e.maxT)
	}
	return nil
}

// Submit queues a request; its tokens arrive on the returned channel, which
// is closed after the final event. Cancelling ctx stops the request.
func (e *Engine) Submit(ctx context.Context, r Request) (<-chan Event, error) {
	if err := e.Check(r); err != nil {
		return nil, err
	}
	j := &job{ctx: ctx, req: r, events: make(chan Event, r.Options.MaxNewTokens+3), sampler: NewSampler(r.Options, r.Seq)}
	e.mu.Lock()
	e.running++
	e.mu.Unlock()
	select {
	case e.submit <- j:
		return j.events, nil
	case <-e.done:
		e.finished()
		return nil, errors.New("generate: the engine has stopped")
	case <-ctx.Done():
		e.finished()
		return nil, ctx.Err()
	}
}

func (e *Engine) finished() {
	e.mu.Lock()
	e.running--
	e.mu.Unlock()
}

// Running is the number of requests queued or being generated.
func (e *Engine) Running() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running
}

// Run schedules requests until ctx is done and no request is running.
func (e *Engine) Run(ctx context.Context) error {
	defer close(e.done)
	defer e.cache.Free(e.m.Backend)
	free := make([]int, e.cache.Slots)
	for i := range free {
		free[i] = len(free) - 1 - i
	}
	var active []*job
	acts := map[int]*model.Activations{}
	defer func() {
		for _, a := range acts {
			a.Free(e.m.Backend)
		}
	}()
	end := func(j *job, ev Event) {
		j.events <- ev
		close(j.events)
		free = append(free, j.slot)
		e.finished()
	}
	for {
		// Wait for work when idle; stop when asked and idle.
		if len(active) == 0 {
			select {
			case j := <-e.submit:
				active = e.admit(j, &free, active, end)
			case <-ctx.Done():
				return nil
			}
		}
		// Admit queued requests while slots are free.
	admit:
		for len(free) > 0 {
			select {
			case j := <-e.submit:
				active = e.admit(j, &free, active, end)
			default:
				break admit
			}
		}
		// Drop cancelled requests.
		active = slices.DeleteFunc(active, func(j *job) bool {
			if err := j.ctx.Err(); err != nil {
				end(j, Event{Err: err})
				return true
			}
			return false
		})
		if len(active) == 0 {
			continue
		}
		B := len(active)
		a, ok := acts[B]
		if !ok {
			var err error
			if a, err = e.m.NewActivations(B, false); err != nil {
				for _, j := range active {
					end(j, Event{Err: err})
				}
				active = nil
				continue
			}
			acts[B] = a
		}
		in := model.Input{B: B, T: 1, IDs: make([]int32, B), Past: make([]int, B), Slots: make([]int, B)}
		for i, j := range active {
			in.IDs[i], in.Past[i], in.Slots[i] = j.next, j.past, j.slot
		}
		lg, err := e.m.Forward(a, in, model.Options{Cache: e.cache})
		var lv []float32
		if err == nil {
			lv, err = e.m.Backend.ToFloat32(lg)
		}
		if err != nil {
			for _, j := range active {
				end(j, Event{Err: err})
			}
			active = nil
			continue
		}
		V := e.m.Config.VocabSize
		kept := active[:0]
		for i, j := range active {
			j.past++
			if e.emit(j, lv[i*V:(i+1)*V], end) {
				kept = append(kept, j)
			}
		}
		active = kept
	}
}

// admit prefills a request's prompt into a free slot and emits its first token.
func (e *Engine) admit(j *job, free *[]int, active []*job, end func(*job, Event)) []*job {
	j.slot = (*free)[len(*free)-1]
	*free = (*free)[:len(*free)-1]
	r := j.req
	if r.Options.MaxNewTokens == 0 && !r.PromptLogprobs {
		end(j, Event{Finish: FinishLength})
		return active
	}
	n := len(r.Prompt)
	var lv []float32
	var err error
	if r.PromptLogprobs {
		var lps []Logprob
		if lps, lv, err = e.scorePrompt(j); err != nil {
			end(j, Event{Err: err})
			return active
		}
		j.events <- Event{Prompt: lps}
		if r.Options.MaxNewTokens == 0 {
			end(j, Event{Finish: FinishLength})
			return active
		}
	} else if lv, err = e.prefill(j.slot, r.Prompt, 0, false); err != nil {
		end(j, Event{Err: err})
		return active
	}
	j.past = n
	if e.emit(j, lv, end) {
		active = append(active, j)
	}
	return active
}

// prefill runs ids at positions past, past+1, ... of a cache slot and
// returns the logits of every row (all) or of the last.
func (e *Engine) prefill(slot int, ids []int32, past int, all bool) ([]float32, error) {
	n := len(ids)
	a, err := e.m.NewActivations(n, false)
	if err != nil {
		return nil, err
	}
	defer a.Free(e.m.Backend)
	in := model.Input{B: 1, T: n, IDs: ids, Past: []int{past}, Slots: []int{slot}}
	if !all {
		in.LogitRows = []int32{int32(n - 1)}
	}
	lg, err := e.m.Forward(a, in, model.Options{Cache: e.cache})
	if err != nil {
		return nil, err
	}
	return e.m.Backend.ToFloat32(lg)
}

// scorePrompt prefills a prompt in chunks, scoring every token after the
// first (row i of the logits scores token i+1), so that the logits held
// at once stay near 64 MB whatever the vocabulary; it returns the scores
// and the last row's logits.
func (e *Engine) scorePrompt(j *job) ([]Logprob, []float32, error) {
	r := j.req
	n, V := len(r.Prompt), e.m.Config.VocabSize
	chunk := e.promptChunk
	if chunk <= 0 {
		chunk = max(16, (64<<20)/(4*V))
	}
	lps := make([]Logprob, n-1)
	var last []float32
	for start := 0; start < n; start += chunk {
		ids := r.Prompt[start:min(n, start+chunk)]
		lv, err := e.prefill(j.slot, ids, start, true)
		if err != nil {
			return nil, nil, err
		}
		for i := range ids {
			if p := start + i; p+1 < n {
				lps[p] = TokenLogprob(lv[i*V:(i+1)*V], r.Prompt[p+1], r.TopLogprobs)
			}
		}
		last = lv[(len(ids)-1)*V:]
	}
	return lps, last, nil
}

// emit samples a request's next token from its logits, delivers it and
// reports whether the request goes on.
func (e *Engine) emit(j *job, logits []float32, end func(*job, Event)) bool {
	tok := j.sampler.Sample(logits)
	var lp *Logprob
	if j.req.Logprobs {
		l := TokenLogprob(logits, tok, j.req.TopLogprobs)
		lp = &l
	}
	if slices.Contains(j.req.Options.Stop, tok) {
		end(j, Event{Token: tok, Logprob: lp, Finish: FinishStop})
		return false
	}
	j.count++
	j.next = tok
	j.events <- Event{Token: tok, Logprob: lp}
	if j.count >= j.req.Options.MaxNewTokens || j.past >= e.maxT {
		end(j, Event{Finish: FinishLength})
		return false
	}
	return true
}
