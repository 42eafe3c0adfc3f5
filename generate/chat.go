package generate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"

	"github.com/minitron/minitron/tokenizer"
)

// chatTemplate is a model's Jinja chat template (Hugging Face's
// chat_template), rendered as transformers' apply_chat_template does:
// messages, add_generation_prompt, the special tokens' strings (bos_token,
// eos_token, ...) and raise_exception.
type chatTemplate struct {
	t    *jinja.Template
	vars map[string]string
}

func newChatTemplate(src string, specials map[string]string) (*chatTemplate, error) {
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("generate: the chat template does not compile: %w", err)
	}
	return &chatTemplate{t: t, vars: specials}, nil
}

// Render formats a conversation; messages hold at least role and content.
func (c *chatTemplate) Render(messages []map[string]any, addGenerationPrompt bool, extra map[string]any) (string, error) {
	data := map[string]any{}
	for k, v := range c.vars {
		data[k] = v
	}
	for k, v := range extra {
		data[k] = v
	}
	ms := make([]any, len(messages))
	for i, m := range messages {
		ms[i] = m
	}
	data["messages"] = ms
	data["add_generation_prompt"] = addGenerationPrompt
	return c.t.Render(data)
}

// RenderChat renders a chat template with the given special tokens; it is
// what the server does with a chat request's messages.
func RenderChat(template string, specials map[string]string, messages []map[string]any, addGenerationPrompt bool) (string, error) {
	c, err := newChatTemplate(template, specials)
	if err != nil {
		return "", err
	}
	return c.Render(messages, addGenerationPrompt, nil)
}

// specialTokens finds the tokens whose text the tokenizer does not encode
// to them (SentencePiece control tokens such as <s> and </s>; tokenizer.json
// added tokens already split out), so that a chat template's output maps
// them to their ids as Hugging Face's tokenizers do.
func specialTokens(tok tokenizer.Tokenizer, named map[string]string) []special {
	seen := map[string]bool{}
	var out []special
	consider := func(id int32) {
		p := tok.Piece(id)
		if p == "" || seen[p] {
			return
		}
		seen[p] = true
		if ids := tok.Encode(p); len(ids) != 1 || ids[0] != id {
			out = append(out, special{text: p, id: id})
		}
	}
	for id := range int32(tok.VocabSize()) {
		p := tok.Piece(id)
		if len(p) >= 3 && p[0] == '<' && p[len(p)-1] == '>' && !isBytePiece(p) {
			consider(id)
		}
	}
	for _, text := range named {
		for id := range int32(tok.VocabSize()) {
			if tok.Piece(id) == text {
				consider(id)
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b special) int { return len(b.text) - len(a.text) })
	return out
}

// isBytePiece reports byte-fallback pieces such as <0x0A>, which stand for
// bytes, not for their own text.
func isBytePiece(p string) bool {
	return len(p) == 6 && strings.HasPrefix(p, "<0x")
}

// encodeSpecial encodes text with special tokens' strings mapped to their
// ids and no BOS added (a chat template writes its own).
func (s *Server) encodeSpecial(text string) []int32 {
	var ids []int32
	for text != "" {
		at, which := len(text), -1
		for i, sp := range s.specials {
			if k := strings.Index(text, sp.text); k >= 0 && k < at {
				at, which = k, i
			}
		}
		ids = s.tok.AppendEncode(ids, text[:at])
		if which < 0 {
			break
		}
		ids = append(ids, s.specials[which].id)
		text = text[at+len(s.specials[which].text):]
	}
	return ids
}

// chatRequest is the subset of OpenAI's chat completions request this
// server honours.
type chatRequest struct {
	sampling
	Messages            []map[string]any `json:"messages"`
	MaxCompletionTokens *int             `json:"max_completion_tokens"`
	Logprobs            bool             `json:"logprobs"`
	TopLogprobs         *int             `json:"top_logprobs"`
	AddGenerationPrompt *bool            `json:"add_generation_prompt"`
	Tools               []any            `json:"tools"`
}

// messages checks a conversation and flattens content given as a list of
// text parts into one string.
func messages(ms []map[string]any) ([]map[string]any, *apiError) {
	if len(ms) == 0 {
		return nil, badRequest("messages", "messages must be a non-empty list")
	}
	out := make([]map[string]any, len(ms))
	for i, m := range ms {
		if r, ok := m["role"].(string); !ok || r == "" {
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d] has no role", i)
		}
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		switch v := m["content"].(type) {
		case string, nil:
		case []any:
			var b strings.Builder
			for j, p := range v {
				part, _ := p.(map[string]any)
				text, ok := part["text"].(string)
				if part["type"] != "text" || !ok {
					return nil, badRequest(fmt.Sprintf("messages[%d].content[%d]", i, j), "messages[%d].content[%d]: only text parts are supported", i, j)
				}
				b.WriteString(text)
			}
			c["content"] = b.String()
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].content", i), "messages[%d].content must be a string or a list of text parts", i)
		}
		out[i] = c
	}
	return out, nil
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var c chatRequest
	if e := s.decode(w, r, &c); e != nil {
		fail(w, e)
		return
	}
	if c.MaxTokens == nil {
		c.MaxTokens = c.MaxCompletionTokens
	}
	st, e := s.settings(&c.sampling)
	if e != nil {
		fail(w, e)
		return
	}
	if s.chat == nil {
		fail(w, badRequest("messages", "this model has no chat template (no chat_template in its tokenizer_config.json); start the server with --chat-template FILE, or use /v1/completions"))
		return
	}
	top := 0
	if c.TopLogprobs != nil {
		if *c.TopLogprobs < 0 || *c.TopLogprobs > maxLogprobs || !c.Logprobs {
			fail(w, badRequest("top_logprobs", "top_logprobs must be in [0, %d] and needs logprobs: true", maxLogprobs))
			return
		}
		top = *c.TopLogprobs
	}
	ms, e := messages(c.Messages)
	if e != nil {
		fail(w, e)
		return
	}
	if st.n > s.opt.MaxChoices {
		fail(w, badRequest("n", "n %d is more than the %d choices this server makes per request", st.n, s.opt.MaxChoices))
		return
	}
	addGen := c.AddGenerationPrompt == nil || *c.AddGenerationPrompt
	var extra map[string]any
	if c.Tools != nil {
		extra = map[string]any{"tools": c.Tools}
	}
	text, err := s.chat.Render(ms, addGen, extra)
	if err != nil {
		fail(w, badRequest("messages", "the chat template failed on these messages: %v", err))
		return
	}
	ids := s.encodeSpecial(text)
	if len(ids) == 0 {
		fail(w, badRequest("messages", "the conversation renders to no tokens"))
		return
	}
	opt, e := s.fit(st.opt, len(ids), s.opt.MaxTokens)
	if e != nil {
		e.Param = "messages"
		fail(w, e)
		return
	}
	var choices []*choice
	for j := range st.n {
		choices = append(choices, &choice{index: j, req: Request{Prompt: ids, Options: opt, Seq: uint64(j), Logprobs: c.Logprobs, TopLogprobs: top}})
	}
	id, created := newID("chatcmpl-"), time.Now().Unix()
	logprobs := func(ch *choice, from int) any {
		if !c.Logprobs {
			return nil
		}
		return map[string]any{"content": s.chatLogprobs(ch, from)}
	}
	chunk := func(choices []map[string]any, u any) map[string]any {
		m := map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": st.model, "choices": choices}
		if st.includeUsage {
			m["usage"] = u
		}
		return m
	}
	started := make([]bool, len(choices))
	s.respond(w, r, st, choices, c.Stream, func(ev *sse, ch *choice, d delta) error {
		if !started[ch.index] {
			started[ch.index] = true
			first := map[string]any{"index": ch.index, "delta": map[string]any{"role": "assistant", "content": ""}, "logprobs": nil, "finish_reason": nil}
			if err := ev.send(chunk([]map[string]any{first}, nil)); err != nil {
				return err
			}
		}
		if d.text != "" || len(ch.ids) > d.from {
			m := map[string]any{"index": ch.index, "delta": map[string]any{"content": d.text}, "logprobs": logprobs(ch, d.from), "finish_reason": nil}
			if err := ev.send(chunk([]map[string]any{m}, nil)); err != nil {
				return err
			}
		}
		if d.finish != "" {
			m := map[string]any{"index": ch.index, "delta": map[string]any{}, "logprobs": nil, "finish_reason": d.finish}
			return ev.send(chunk([]map[string]any{m}, nil))
		}
		return nil
	}, func() any {
		return chunk([]map[string]any{}, usage(len(ids), generated(choices)))
	}, func() any {
		var out []map[string]any
		for _, ch := range choices {
			out = append(out, map[string]any{"index": ch.index, "message": map[string]any{"role": "assistant", "content": ch.text.String()},
				"logprobs": logprobs(ch, 0), "finish_reason": ch.finish})
		}
		return map[string]any{"id": id, "object": "chat.completion", "created": created, "model": st.model,
			"choices": out, "usage": usage(len(ids), generated(choices))}
	})
}

// chatLogprobs is the chat API's logprobs content list for a choice's
// entries from index from on.
func (s *Server) chatLogprobs(ch *choice, from int) []map[string]any {
	out := []map[string]any{}
	entry := func(before []int32, id int32, lp float32) map[string]any {
		text, shown := s.tokenString(before, id)
		if text == "" {
			text = shown
		}
		b := []byte(text)
		ints := make([]int, len(b))
		for i, x := range b {
			ints[i] = int(x)
		}
		return map[string]any{"token": shown, "logprob": lp, "bytes": ints}
	}
	for i := from; i < len(ch.ids); i++ {
		before := ch.context(i)
		lp := ch.lps[i]
		e := entry(before, ch.ids[i], lp.Logprob)
		top := []map[string]any{}
		for _, t := range lp.Top {
			top = append(top, entry(before, t.Token, t.Logprob))
		}
		e["top_logprobs"] = top
		out = append(out, e)
	}
	return out
}

// ChatConfig is what a model directory says about chat: its template and
// the strings of its special tokens (the template's bos_token, eos_token,
// unk_token and pad_token variables).
type ChatConfig struct {
	Template string
	Source   string // the file the template came from
	Specials map[string]string
}

// ReadChatConfig reads a model directory's chat template (chat_template.jinja,
// or tokenizer_config.json's chat_template: a string, or a list of named
// templates of which "default" is used) and special tokens; tok supplies
// the special tokens tokenizer_config.json does not name. A directory
// without a template gives an empty Template.
func ReadChatConfig(dir string, tok tokenizer.Tokenizer) (*ChatConfig, error) {
	cc := &ChatConfig{Specials: map[string]string{}}
	if b := tok.BOS(); b >= 0 {
		cc.Specials["bos_token"] = tok.Piece(b)
	}
	if e := tok.EOS(); e >= 0 {
		cc.Specials["eos_token"] = tok.Piece(e)
	}
	p := filepath.Join(dir, "tokenizer_config.json")
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("generate: %w", err)
	default:
		var c map[string]json.RawMessage
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("generate: %s: invalid JSON: %v", p, err)
		}
		for _, k := range []string{"bos_token", "eos_token", "unk_token", "pad_token"} {
			var s string
			var obj struct {
				Content string `json:"content"`
			}
			switch {
			case json.Unmarshal(c[k], &s) == nil && s != "":
				cc.Specials[k] = s
			case json.Unmarshal(c[k], &obj) == nil && obj.Content != "":
				cc.Specials[k] = obj.Content
			}
		}
		if raw, ok := c["chat_template"]; ok && string(raw) != "null" {
			var one string
			var named []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			switch {
			case json.Unmarshal(raw, &one) == nil:
				cc.Template = one
			case json.Unmarshal(raw, &named) == nil:
				for _, n := range named {
					if n.Name == "default" {
						cc.Template = n.Template
					}
				}
				if cc.Template == "" {
					return nil, fmt.Errorf("generate: %s: chat_template lists no template named \"default\"", p)
				}
			default:
				return nil, fmt.Errorf("generate: %s: chat_template is neither a string nor a list of {name, template}", p)
			}
			cc.Source = p
		}
	}
	jp := filepath.Join(dir, "chat_template.jinja")
	if b, err := os.ReadFile(jp); err == nil {
		cc.Template, cc.Source = string(b), jp
	}
	return cc, nil
}
